"""Run configuration, run directory, checkpoints and atomic writes."""
from __future__ import annotations

import json

import pytest
import torch

from hrnet_edge import create_model
from hrnet_edge.errors import CheckpointError, ConfigError, RunDirError
from hrnet_edge.io import atomic_path, write_json
from hrnet_edge.runconfig import load_run_config, run_config_from_dict
from hrnet_edge.runs import init_run, open_run
from hrnet_edge.training.checkpoint import (
    load_model_weights, load_optimizer_state, read_state, save_checkpoint,
)


def test_default_config_round_trips(tmp_path):
    cfg = load_run_config(None)
    assert cfg.model_config().task == "pose"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert load_run_config(path) == cfg


def test_a_run_written_before_train_processes_keeps_one_process(tmp_path):
    """The detection quick recipe trains in 2 processes now; a run whose config.json
    predates ``[train] processes`` trained in one, and resumes in one."""
    cfg = load_run_config(None, model="hrnet_w8_det")
    assert cfg.train.processes == 2  # the recipe's
    run = init_run(tmp_path / "r", cfg)
    data = json.loads(run.config_path.read_text())
    assert data["train"]["processes"] == 2
    del data["train"]["processes"]
    run.config_path.write_text(json.dumps(data))
    _run, loaded = open_run(run.root)
    assert loaded.train.processes == 1 and loaded.train.epochs == cfg.train.epochs


def test_toml_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "hrnet_w16_pose"\n[train]\nepochs = 3\n[model_overrides]\ninput_size = [64, 64]\n')
    cfg = load_run_config(path)
    assert cfg.train.epochs == 3 and cfg.model_config().input_size == (64, 64)


@pytest.mark.parametrize("data, match", [
    ({"trian": {}}, "trian"),
    ({"train": {"epoch": 3}}, "epoch"),
    ({"model": "hrnet_w8_psoe"}, "hrnet_w8_pose"),
    ({"model_overrides": {"widht": 4}}, "widht"),
    ({"eval": {"decoder": "argmax"}}, "valid: dark, quarter"),
    ({"eval": {"flip_test": "yes"}}, "flip_test must be true or false"),
])
def test_bad_config_keys(data, match):
    with pytest.raises(ConfigError, match=match):
        run_config_from_dict(data)


def test_missing_and_unparsable_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_run_config(bad)


def test_run_dir_refuses_a_different_config(tmp_path):
    cfg = load_run_config(None)
    run = init_run(tmp_path / "r", cfg)
    assert open_run(run.root)[1] == cfg
    other = run_config_from_dict({"train": {"epochs": 1}})
    # before any stage has written a result, a corrected configuration replaces the old
    # (a run that failed on its configuration must not keep it)
    assert open_run(init_run(run.root, other).root)[1] == other
    (run.checkpoints).mkdir()
    (run.checkpoints / "last.safetensors").write_bytes(b"x")
    with pytest.raises(RunDirError, match="different configuration"):
        init_run(run.root, cfg)
    with pytest.raises(RunDirError, match="train"):
        run.best_checkpoint()


def test_checkpoint_round_trip_with_optimizer(tmp_path):
    model = create_model("hrnet_w8_pose", input_size=(64, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "last.safetensors", model, {"epoch": 3, "best": 0.5}, opt)
    other = create_model("hrnet_w8_pose", input_size=(64, 64))
    state = load_model_weights(other, path)
    assert state["epoch"] == 3 and len(state["sha256"]) == 64
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    load_optimizer_state(opt2, path, state)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert torch.equal(s1[0]["exp_avg"], s2[0]["exp_avg"])


def test_checkpoint_errors(tmp_path):
    model = create_model("hrnet_w8_pose", input_size=(64, 64))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model_weights(model, tmp_path / "none.safetensors")
    corrupt = tmp_path / "c.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_model_weights(model, corrupt)
    path = save_checkpoint(tmp_path / "w16.safetensors", create_model("hrnet_w16_pose"), {})
    with pytest.raises(CheckpointError, match="does not fit") as err:
        load_model_weights(model, path)
    assert "det_tower_convs" not in str(err.value)
    # a detection checkpoint with two-conv towers (the edge widths' before they had one)
    det = dict(input_size=(64, 64), num_outputs=3, head_channels=8)
    two = save_checkpoint(tmp_path / "two.safetensors", create_model("hrnet_w8_det", det_tower_convs=2, **det), {})
    with pytest.raises(CheckpointError, match="towers have 2 conv layers and this model's 1: set det_tower_convs = 2"):
        load_model_weights(create_model("hrnet_w8_det", **det), two)
    load_model_weights(create_model("hrnet_w8_det", det_tower_convs=2, **det), two)  # as the hint says
    # the state is inside the checkpoint: its JSON copy is not needed to read it
    path = save_checkpoint(tmp_path / "w8.safetensors", model, {"epoch": 2})
    path.with_suffix(".json").unlink()
    assert read_state(path)["epoch"] == 2
    # a checkpoint without an embedded state needs its JSON, and the JSON must be its own
    from safetensors.torch import save_file

    legacy = tmp_path / "legacy.safetensors"
    save_file({"w": torch.zeros(2)}, str(legacy))
    with pytest.raises(CheckpointError, match="incomplete"):
        read_state(legacy)
    legacy.with_suffix(".json").write_text(json.dumps({"epoch": 1, "sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="do not belong together"):
        read_state(legacy)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_tidy_leaves_the_staging_of_a_running_writer_and_clears_a_dead_ones(tmp_path):
    """A pipeline's export worker writes into the run while the main process starts its
    next stage, whose tidy used to remove the worker's staging folder as a leftover."""
    import subprocess
    import sys

    from hrnet_edge.io import OWNER, recover_partials

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from hrnet_edge.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.mkdir(); (tmp / 'new.bin').write_text('new')\n"
        "    print('writing', flush=True); sys.stdin.readline()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        staging = next(tmp_path.glob(".partial.model.*"))
        assert (staging / OWNER).read_text().split()[0] == str(writer.pid)
        assert recover_partials(tmp_path) == [] and staging.is_dir()  # alive: not a leftover
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
        writer.wait()
    assert (target / "new.bin").read_text() == "new" and not staging.exists()
    # a writer killed mid-replace: the old folder was moved aside into the staging folder
    dead = tmp_path / ".partial.model.dead"
    (dead / ".replaced").mkdir(parents=True)
    (dead / ".replaced" / "old.bin").write_text("old")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (dead / OWNER).write_text(f"{gone.stdout.strip()} 12345")
    __import__("shutil").rmtree(target)
    assert recover_partials(tmp_path) == [f"restored {target} (its replacement was interrupted)",
                                          "removed the unfinished .partial.model.dead"]
    assert (target / "old.bin").read_text() == "old"


def test_export_of_some_targets_keeps_the_others_in_the_index(tmp_path):
    """``export --targets onnx`` used to rewrite exports/index.json with the ONNX rows
    only, and the next ``check`` then dropped every other artifact from the report."""
    from hrnet_edge.io import read_json, write_json
    from hrnet_edge.pipeline.stages import merge_index
    from hrnet_edge.runs import RunDir

    run = RunDir(tmp_path)
    rows = [{"target": t, "precision": p, "status": "exported"}
            for t, p in (("onnx", "fp32"), ("tflite", "int8"), ("executorch", "int8"))]
    rows.append({"target": "coreml", "precision": "fp16", "status": "skipped", "reason": "no coremltools"})
    for r in rows[:2]:
        run.export_dir(r["target"], r["precision"]).mkdir(parents=True)
    write_json(run.exports / "index.json", rows)
    fresh = [{"target": "onnx", "precision": "fp32", "status": "exported", "seconds": 1.0}]
    merged = merge_index(run, fresh)
    keys = [(r["target"], r["precision"]) for r in merged]
    # tflite kept (on disk), executorch dropped (its folder is gone), the skipped row kept,
    # onnx replaced by the fresh row
    assert keys == [("tflite", "int8"), ("coreml", "fp16"), ("onnx", "fp32")]
    assert merged[-1]["seconds"] == 1.0
    assert read_json(run.exports / "index.json") == rows  # merge_index itself writes nothing
