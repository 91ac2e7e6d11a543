"""The pipeline's float exports begun beside QAT (stages.start_early_exports): the export
stage collects them as if it had made them, a stopped worker leaves nothing half-written,
and a worker ends with the process that started it.

Each test starts from a copy of the tiny finished QAT run of ``hardening_run`` (ONNX fp32
and int8 planned), with ``[export] parallel`` switched on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrnet_edge.pipeline.stages import planned_exports, stage_export, start_early_exports
from hrnet_edge.runs import open_run, tidy_run

pytestmark = pytest.mark.filterwarnings("ignore")


def _qat_run(hardening_run, tmp_path: Path):
    shutil.copytree(hardening_run["qat"], tmp_path / "run", symlinks=True)
    run, cfg = open_run(tmp_path / "run")
    return run, dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, parallel=True))


def _quiet(*_a, **_k) -> None:
    pass


def test_the_export_stage_collects_the_early_float_exports(hardening_run, tmp_path):
    from converters.check import integrity_problem

    run, cfg = _qat_run(hardening_run, tmp_path)
    early = start_early_exports(run, cfg)
    assert early is not None and early.pairs == [("onnx", "fp32")]
    rows = stage_export(run, cfg, log=_quiet, early=early)
    assert [(r["target"], r["precision"]) for r in rows] == planned_exports(cfg) == [("onnx", "fp32"), ("onnx", "int8")]
    assert [r["status"] for r in rows] == ["exported", "exported"], rows
    assert rows[0]["reason"] == "" and rows[0]["seconds"] > 0  # made by the worker, not kept
    assert json.loads((run.exports / "index.json").read_text()) == rows
    assert integrity_problem(run.export_dir("onnx", "fp32")) is None
    assert not list(run.exports.glob(".*rows.json"))
    # The same artifact as the export stage makes alone: the next export keeps it.
    again = stage_export(run, cfg, log=_quiet)
    assert [r["reason"] for r in again] == ["kept (exists)", "kept (exists)"]


def test_the_longest_float_export_goes_first(hardening_run, tmp_path):
    """ExecuTorch's float lowering (the longest) starts beside QAT; the others keep the
    planned order, and no INT8 export is among them."""
    from hrnet_edge.pipeline.stages import early_pairs

    _run, cfg = _qat_run(hardening_run, tmp_path)
    cfg = dataclasses.replace(cfg, export=dataclasses.replace(
        cfg.export, targets=("onnx", "tflite", "executorch"), precisions=("fp32", "fp16", "int8")))
    assert early_pairs(cfg) == [("executorch", "fp32"), ("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16")]


def test_nothing_to_overlap_means_no_worker(hardening_run, tmp_path):
    run, cfg = _qat_run(hardening_run, tmp_path)
    only_float = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, precisions=("fp32",)))
    assert start_early_exports(run, only_float) is None  # nothing would follow QAT
    serial = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, parallel=False))
    assert start_early_exports(run, serial) is None


def test_a_stopped_worker_leaves_whole_artifacts_or_none(hardening_run, tmp_path):
    from converters.check import integrity_problem

    run, cfg = _qat_run(hardening_run, tmp_path)
    early = start_early_exports(run, cfg)
    time.sleep(3)  # somewhere in its imports or its export
    early.stop()
    assert early.worker[0].returncode is not None
    tidy_run(run)  # what a later command does first
    out = run.export_dir("onnx", "fp32")
    assert not out.exists() or integrity_problem(out) is None
    assert not list(run.exports.glob(".*rows.json"))
    assert sorted(p.name for p in run.exports.iterdir() if not p.name.startswith(".")) in ([], ["onnx-fp32"])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status is left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_worker_ends_when_the_process_that_started_it_is_killed(hardening_run, tmp_path):
    run, _cfg = _qat_run(hardening_run, tmp_path)
    code = (
        "import dataclasses, os, sys, time\n"
        "from hrnet_edge.pipeline.stages import start_early_exports\n"
        "from hrnet_edge.runs import open_run\n"
        f"run, cfg = open_run({str(run.root)!r})\n"
        "cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, parallel=True))\n"
        "early = start_early_exports(run, cfg)\n"
        "print(early.worker[0].pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    # the pipeline's own priority: QAT runs one thread beside it (EarlyExports)
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0)
    parent.kill()  # SIGKILL: no cleanup of its own runs
    parent.wait()
    deadline = time.time() + 20
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the export worker outlived the pipeline that started it"


def test_no_stage_tidies_the_run_while_the_early_worker_writes(hardening_run, tmp_path, monkeypatch):
    """The stages after training must not clear the run's staging folders while the
    early worker stages its artifacts in them (a tidy did, and the worker's TFLite
    export failed with its own staging folder gone). The pipeline resumes a copy of the
    trained tiny run (no data to generate in this process), parallel exports on."""
    import hrnet_edge.runs as runs
    from hrnet_edge.cli import main
    from hrnet_edge.pipeline import stages

    events: list[str] = []
    start, finish, tidy = stages.EarlyExports.__init__, stages.EarlyExports.finish, runs.tidy_run

    def started(self, *a, **k):
        start(self, *a, **k)
        events.append("early started")

    def finished(self, log):
        rows = finish(self, log)
        events.append("early collected")
        return rows

    def tidied(run):
        events.append("tidy")
        return tidy(run)

    threads, share = [], stages.EarlyExports.thread_share
    monkeypatch.setattr(stages.EarlyExports, "thread_share",
                        lambda self, n: (threads.append((n, events[-1:])), share(self, n))[1])
    monkeypatch.setattr(stages.EarlyExports, "__init__", started)
    monkeypatch.setattr(stages.EarlyExports, "finish", finished)
    monkeypatch.setattr(runs, "tidy_run", tidied)
    root = tmp_path / "run"
    shutil.copytree(hardening_run["trained"], root, symlinks=True)
    config = json.loads((root / "config.json").read_text())
    config["export"]["parallel"] = True
    (root / "config.json").write_text(json.dumps(config))
    rc = main(["pipeline", "--run", str(root), "--no-progress"])
    assert rc in (0, 1)
    assert "early started" in events and "early collected" in events, events
    between = events[events.index("early started"):events.index("early collected")]
    assert "tidy" not in between, events
    assert events.count("tidy") >= 2  # before training, and again for the checks
    # QAT shared the threads with the worker it started after (EarlyExports.thread_share)
    assert threads == [(config["check"]["threads"], ["early started"])], threads
    index = json.loads((root / "exports" / "index.json").read_text())
    assert [r["status"] for r in index] == ["exported", "exported"], index


def test_qat_takes_one_thread_while_the_worker_runs_and_all_once_it_ends():
    import torch

    from hrnet_edge.pipeline import stages

    before = torch.get_num_threads()
    early = object.__new__(stages.EarlyExports)  # only its worker process matters here
    early.worker = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"]), None)
    try:
        rethread = early.thread_share(2)
        assert early.running() and torch.get_num_threads() == 1
        rethread()
        assert torch.get_num_threads() == 1  # the worker still runs
        early.worker[0].wait()
        rethread()
        assert not early.running() and torch.get_num_threads() == 2
        early.thread_share(2)  # a worker that has already ended: all threads at once
        assert torch.get_num_threads() == 2
    finally:
        early.worker[0].kill()
        torch.set_num_threads(before)
