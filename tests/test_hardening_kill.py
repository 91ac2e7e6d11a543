"""Issue 13's kill test: SIGKILL at named points of train, qat, export and check, then
the same command again, must end where an uninterrupted run ends.

Each case starts from a copy of the tiny run of ``hardening_run`` (conftest) as it was
before the stage, runs the stage's command in a child process with
``HRNET_EDGE_KILL_AT=<point>`` (``hrnet_edge.faults.kill_point`` sends SIGKILL to
itself there: no clean-up runs), checks that the child really died there, re-runs the
same command without the hook, and compares the outputs with the uninterrupted run's:
byte for byte where the bytes carry no timing (ONNX files, their metadata.json and
inspection, the QAT config), tensor for tensor for checkpoints (their state records
seconds per epoch), field by field for rows that hold latencies.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore")

TIMING_KEYS = {"seconds", "exported_at", "timings_s", "latency", "peak_rss_mb", "rss_before_load_mb",
               "time", "runtime", "run"}


def killed_cli(run: Path, argv: list[str], kill_at: str) -> subprocess.CompletedProcess:
    """The command in a child process that SIGKILLs itself at ``kill_at``."""
    env = {**os.environ, "HRNET_EDGE_KILL_AT": kill_at}
    return subprocess.run([sys.executable, "-m", "hrnet_edge.cli", *argv, "--run", str(run), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)


def tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def same_tensors(a: Path, b: Path, rtol: float = 0.0) -> None:
    ta, tb = tensors(a), tensors(b)
    assert sorted(ta) == sorted(tb), a
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape, (a, k)
        if rtol == 0.0:
            assert ta[k].tobytes() == tb[k].tobytes(), (a, k)
        else:  # within ``rtol`` of the tensor's own range
            scale = float(np.abs(tb[k]).max()) if tb[k].size else 0.0
            assert float(np.abs(ta[k] - tb[k]).max(initial=0.0)) <= rtol * scale + 1e-7, (a, k)


def untimed(value):
    """A JSON value without the fields that hold times (they differ between runs)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def same_json(a: Path, b: Path) -> None:
    assert untimed(json.loads(a.read_text())) == untimed(json.loads(b.read_text())), a


def sha256_file(path: Path) -> str:
    from hrnet_edge.io import sha256_file as sha

    return sha(path)


def state(path: Path) -> dict:
    from hrnet_edge.training.checkpoint import read_state

    return untimed({k: v for k, v in read_state(path).items() if k != "sha256"})


def no_partials(run: Path) -> None:
    left = [str(p.relative_to(run)) for p in run.rglob(".partial.*")]
    assert not left, left


def compare_train(run: Path, ref: Path) -> None:
    for name in ("best", "last"):
        same_tensors(run / "checkpoints" / f"{name}.safetensors", ref / "checkpoints" / f"{name}.safetensors")
        assert state(run / "checkpoints" / f"{name}.safetensors") == state(ref / "checkpoints" / f"{name}.safetensors")
        # the readable copy agrees with the checkpoint it sits beside
        side = json.loads((run / "checkpoints" / f"{name}.json").read_text())
        assert untimed({k: v for k, v in side.items() if k != "sha256"}) == state(
            run / "checkpoints" / f"{name}.safetensors")
    epochs = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2]  # no epoch trained twice, none missing


def compare_qat(run: Path, ref: Path) -> None:
    """NNCF QAT is not bit-reproducible between two processes on one machine (init
    scales differ in the fifth digit, fine-tuned weights by up to about 0.1 % of a
    tensor's range), so QAT tensors are compared within 2 % of each tensor's range;
    its config byte for byte; its record must name the files beside it."""
    from hrnet_edge.pipeline.stages import qat_files_sha256
    from hrnet_edge.runs import RunDir

    same_tensors(run / "qat" / "qat.safetensors", ref / "qat" / "qat.safetensors", rtol=0.02)
    config, ref_config = (json.loads((r / "qat" / "qat_config.json").read_text()) for r in (run, ref))
    assert config.pop("weights_sha256") == sha256_file(run / "qat" / "qat.safetensors")  # the pair agrees
    ref_config.pop("weights_sha256")
    assert config == ref_config
    metrics = json.loads((run / "qat" / "metrics.json").read_text())
    assert metrics["qat_sha256"] == qat_files_sha256(RunDir(run))
    assert metrics["source_checkpoint_sha256"] == json.loads((ref / "qat" / "metrics.json").read_text())[
        "source_checkpoint_sha256"]


def compare_export(run: Path, ref: Path) -> None:
    for art in ("onnx-fp32", "onnx-int8"):
        for f in ("model.onnx", "metadata.json", "inspect.json"):
            a, b = (run / "exports" / art / f).read_bytes(), (ref / "exports" / art / f).read_bytes()
            assert a == b, (art, f, onnx_difference(run / "exports" / art / f, ref / "exports" / art / f))
    rows = [json.loads((r / "exports" / "index.json").read_text()) for r in (run, ref)]
    assert [[(x["target"], x["precision"], x["status"]) for x in r] for r in rows[:1]] == \
        [[(x["target"], x["precision"], x["status"]) for x in rows[1]]]


def onnx_difference(a: Path, b: Path) -> str:
    """Where two ONNX files differ (graph or which metadata field), for the message."""
    if a.suffix != ".onnx":
        return ""
    import onnx

    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    props = [({p.key: p.value for p in m.metadata_props}) for m in (ma, mb)]
    fields = []
    for k in props[0]:
        try:
            ja, jb = json.loads(props[0][k]), json.loads(props[1].get(k, "{}"))
            fields += [f for f in set(ja) | set(jb) if ja.get(f) != jb.get(f)]
        except ValueError:
            fields += [k] if props[0][k] != props[1].get(k) else []
    return f"graph equal: {ma.graph == mb.graph}; metadata fields that differ: {fields}"


def compare_check(run: Path, ref: Path) -> None:
    for row in sorted((ref / "checks").glob("*.json")):
        same_json(run / "checks" / row.name, row)
    same_json(run / "report.json", ref / "report.json")


def fresh(ctx: dict, dest: Path) -> None:
    """The trained snapshot without any training output: config and data only."""
    shutil.copytree(ctx["trained"], dest, symlinks=True)
    for rel in ("checkpoints", "metrics.csv", "logs"):
        p = dest / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def from_stage(stage: str) -> callable:
    return lambda ctx, dest: shutil.copytree(ctx[stage], dest, symlinks=True)


def after_kill_no_best_without_last(run: Path) -> None:
    """Killed between best and last: the run is not taken for trained."""
    from hrnet_edge.cli import main

    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert not (run / "checkpoints" / "last.safetensors").is_file()
    assert main(["qat", "--run", str(run)]) == 2  # 'training ... is unfinished (epoch 0 of 2)'


def after_kill_qat_not_done(run: Path) -> None:
    assert (run / "qat" / "qat.safetensors").is_file() and not (run / "qat" / "metrics.json").is_file()


def after_kill_swap(run: Path) -> None:
    """Killed between moving the old export aside and renaming the new one in: the old
    one is inside the staging folder, never half in place."""
    assert not (run / "exports" / "onnx-fp32").exists()
    assert list((run / "exports").glob(".partial.onnx-fp32.*/.replaced/model.onnx"))


def after_kill_no_index(run: Path) -> None:
    assert not (run / "exports" / "index.json").exists()


# (id, where the run starts, command, kill point, comparison, check after the kill)
CASES = [
    ("train-best-write", fresh, ["train"], "write:best.safetensors", compare_train, None),
    ("train-best-pair", fresh, ["train"], "pair:best.safetensors", compare_train, None),
    ("train-between-best-and-last", fresh, ["train"], "train:between-best-and-last", compare_train,
     after_kill_no_best_without_last),
    ("train-last-pair", fresh, ["train"], "pair:last.safetensors", compare_train, None),
    ("qat-config-write", from_stage("trained"), ["qat"], "write:qat_config.json", compare_qat, None),
    ("qat-before-metrics", from_stage("trained"), ["qat"], "qat:before-metrics", compare_qat,
     after_kill_qat_not_done),
    ("export-artifact-write", from_stage("qat"), ["export"], "write:onnx-fp32", compare_export, None),
    ("export-folder-swap", from_stage("exported"), ["export", "--force"], "swap:onnx-fp32", compare_export,
     after_kill_swap),
    ("export-before-index", from_stage("qat"), ["export"], "export:before-index", compare_export,
     after_kill_no_index),
    ("check-after-reference", from_stage("exported"), ["check"], "check:after-pytorch-fp32", compare_check, None),
    ("check-report-write", from_stage("exported"), ["check"], "write:report.json", compare_check, None),
]
STAGE_OF = {"train": "trained", "qat": "qat", "export": "exported", "check": "checked"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_killed_stage_reruns_to_the_same_result(case, hardening_run, tmp_path, capsys):
    from hrnet_edge.cli import main

    _id, start, argv, point, compare, after_kill = case
    run = tmp_path / "run"
    start(hardening_run, run)
    killed = killed_cli(run, argv, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    if after_kill is not None:
        after_kill(run)
    capsys.readouterr()
    # the same command again (in this process: the child's start-up is the slow part)
    rc = main([*argv, "--run", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == hardening_run["rc"][STAGE_OF[argv[0]]], err[-2000:]
    assert "Traceback" not in err
    no_partials(run)
    compare(run, hardening_run[STAGE_OF[argv[0]]])


def test_the_hook_does_nothing_when_unset(monkeypatch):
    from hrnet_edge.faults import kill_point

    monkeypatch.delenv("HRNET_EDGE_KILL_AT", raising=False)
    kill_point("train:after-epoch")  # still alive
    monkeypatch.setenv("HRNET_EDGE_KILL_AT", "some:other-point")
    kill_point("train:after-epoch")


def test_a_changed_checkpoint_is_never_built_on(hardening_run, tmp_path, capsys):
    """After training changes the checkpoint, QAT, exports and checks made from the old
    one are redone (with the reason), not reused: qat used to say 'exists' and export
    used to keep artifacts (and intermediate ONNX) from the old model."""
    from hrnet_edge.cli import main
    from hrnet_edge.training.checkpoint import load_model_weights, save_checkpoint
    from hrnet_edge import create_model

    run = tmp_path / "run"
    shutil.copytree(hardening_run["checked"], run)
    best = run / "checkpoints" / "best.safetensors"
    model = create_model("hrnet_w8_pose", input_size=(64, 64))
    st = load_model_weights(model, best)
    with __import__("torch").no_grad():
        model.head.final.bias.add_(0.01)  # another model, as a new training would give
    save_checkpoint(best, model, {k: v for k, v in st.items() if k != "sha256"})
    capsys.readouterr()
    assert main(["qat", "--run", str(run), "--no-progress"]) == 0
    assert "[qat] redoing QAT: the trained checkpoint changed since QAT ran" in capsys.readouterr().out
    assert main(["export", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "onnx-fp32: exporting again: it was made from another trained checkpoint" in out
    meta = json.loads((run / "exports" / "onnx-fp32" / "metadata.json").read_text())
    from hrnet_edge.io import sha256_file

    assert meta["checkpoint_sha256"] == sha256_file(best)


def test_intermediate_onnx_is_keyed_by_the_code_that_writes_it(hardening_run, tmp_path, monkeypatch):
    """The ONNX that TFLite converts from is reused only for the same weights and the same
    graph code: an upgrade that changes the model or exporter code (same checkpoint) used
    to reuse the old graph, and its TFLite then failed parity."""
    import onnx

    from hrnet_edge.pipeline import jobs
    from hrnet_edge.runs import open_run

    shutil.copytree(hardening_run["trained"], tmp_path / "run")
    run, cfg = open_run(tmp_path / "run")
    first = jobs.JobFactory(run, cfg).onnx_for("fp32")
    assert first.is_file() and jobs.graph_code_key()[:8] in first.name
    first.write_bytes(b"stands for an older graph")
    assert jobs.JobFactory(run, cfg).onnx_for("fp32") == first  # same weights, same code: reused
    assert first.read_bytes() == b"stands for an older graph"
    monkeypatch.setattr(jobs, "graph_code_key", lambda: "0123456789abcdef" * 4)  # the code changed
    fresh = jobs.JobFactory(run, cfg).onnx_for("fp32")
    assert fresh != first and "-01234567.onnx" in fresh.name
    onnx.checker.check_model(onnx.load(str(fresh)))
