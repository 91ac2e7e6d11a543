"""Distributed training on CPU: 2 gloo processes with batch B train like 1 process with
batch 2B, a killed process ends the job with one clear error, ``hrnet-edge train --nproc``
starts torchrun itself, and QAT runs under torchrun too."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = """
model = "hrnet_w8_cls"
[model_overrides]
input_size = [64, 64]
num_outputs = 2
[data]
synthetic_classes = 2
synthetic_train_per_class = {per_class}
synthetic_val_per_class = 4
synthetic_image_size = [72, 72]
workers = 0
[train]
epochs = {epochs}
batch_size = {batch}
lr = 0.005
optimizer = "sgd"
schedule = "step"
warmup_epochs = 0
sync_bn = true
"""
ROOT = Path(__file__).resolve().parents[1]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _torchrun(tmp: Path, name: str, nproc: int, batch: int, per_class: int = 8, epochs: int = 1,
              wait: bool = True, extra: str = ""):
    cfg = tmp / f"{name}.toml"
    cfg.write_text(CONFIG.format(batch=batch, per_class=per_class, epochs=epochs) + extra)
    cmd = [*TORCHRUN, f"--nproc-per-node={nproc}", "-m", "hrnet_edge.cli", "train", "--config", str(cfg),
           "--run-dir", str(tmp / name), "--no-progress"]
    return _command(tmp, cmd, wait=False) if not wait else (tmp / name, _command(tmp, cmd))


def _command(tmp: Path, cmd: list[str], wait: bool = True):
    """Run ``cmd`` in ``tmp`` with this checkout importable; its output (or the process,
    without ``wait``). The command must succeed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_two_processes_with_batch_b_train_like_one_with_batch_2b(tmp_path):
    """16 images, one epoch: 2 processes x batch 4 (SyncBatchNorm) against 1 process x
    batch 8, both launched by torchrun with the same seed and initial weights. Tolerance:
    the epoch's loss within 5e-4 absolute, every weight within 1e-3 (a step at lr 5e-3
    moves a weight by up to about 5e-3: a missing all-reduce or a wrong slice shows
    there), BatchNorm running statistics within 1 % of their size. The first step agrees
    to float rounding (weights 6e-8 after it); the gradient all-reduce and the
    synchronised BatchNorm statistics round differently from one process, and BatchNorm
    over the 2x2 maps of the lowest branch amplifies that in the second step (measured in
    NCHW order: loss 1e-4, weights 3e-5 to 1e-4, running variances up to 2e-3 of their
    size; with the default channels-last kernels, which sum in another order for batch 4
    than for 8: weights up to 5.2e-4)."""
    import csv

    import torch
    from safetensors.torch import load_file

    from hrnet_edge import create_model
    from hrnet_edge.training.checkpoint import save_checkpoint

    # both start from the same backbone weights ([init]): the run-config path of issue 12
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.safetensors", create_model("hrnet_w8_cls", num_outputs=5), {})
    extra = f'[init]\npath = "{init}"\nparts = ["backbone"]\n'
    two, out2 = _torchrun(tmp_path, "two", nproc=2, batch=4, extra=extra)
    one, _ = _torchrun(tmp_path, "one", nproc=1, batch=8, extra=extra)
    assert out2.count("[train] initialised") == 1  # process 0 logs, the other loads silently
    rows = [list(csv.DictReader((d / "metrics.csv").open()))[0] for d in (two, one)]
    assert abs(float(rows[0]["train_loss"]) - float(rows[1]["train_loss"])) <= 5e-4
    a, b = (load_file(str(d / "checkpoints" / "last.safetensors")) for d in (two, one))
    keys = [k for k in b if not k.startswith("optim/") and not k.endswith("num_batches_tracked")]
    assert set(keys) <= set(a)
    diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in keys}
    params = [k for k in keys if not k.endswith(("running_mean", "running_var"))]
    worst = max(params, key=diff.get)
    assert diff[worst] <= 1e-3, (worst, diff[worst])
    # the BN running statistics (values up to ~5) within 1 % of their size
    for k in set(keys) - set(params):
        assert diff[k] <= 1e-2 * max(1.0, b[k].abs().max().item()), k
    # only process 0 wrote: one metrics file, one log, no per-rank leftovers
    assert sorted(p.name for p in (two / "logs").iterdir()) == ["train.log"]


def test_a_killed_process_ends_the_job_with_a_clear_error(tmp_path):
    """Kill one worker while it trains: torchrun stops the other and fails; the run
    directory keeps the epochs completed before, and the same command resumes."""
    import psutil

    proc = _torchrun(tmp_path, "killed", nproc=2, batch=4, per_class=16, epochs=40, wait=False)
    last = tmp_path / "killed" / "checkpoints" / "last.safetensors"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.is_file(), "no epoch finished"
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "hrnet_edge.cli" in " ".join(c.cmdline())]
    assert len(workers) == 2
    workers[1].kill()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "FAILED" in out and "exitcode" in out and "-9" in out  # torchrun names the dead worker
    # the checkpoint of a completed epoch is whole: a resume starts from it
    from hrnet_edge.training.checkpoint import read_state

    assert read_state(last)["epoch"] >= 1


def test_ctrl_c_stops_every_process_and_says_interrupted(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) during ``hrnet-edge train`` with
    2 processes: torchrun stops its processes, the command ends with status 130 and
    one "interrupted" line, no traceback, and nothing of the job is left running."""
    import signal

    import psutil

    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(batch=4, per_class=16, epochs=40).replace("[train]\n", "[train]\nprocesses = 2\n"))
    cmd = [sys.executable, "-m", "hrnet_edge.cli", "train", "--config", str(cfg), "--run", str(tmp_path / "r"),
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = tmp_path / "r" / "checkpoints" / "last.safetensors"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.is_file(), "no epoch finished"
    job = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(job) >= 4  # the command, torchrun, its 2 processes
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "hrnet-edge train: interrupted" in out and "Traceback" not in out, out
    deadline = time.time() + 20
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in job[1:]) \
            and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in job[1:] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("n,ref,expected", [(4, 128, 1e-3 * 4 * 32 / 128), (1, None, 1e-3)])
def test_lr_scaling_rule(n, ref, expected):
    from hrnet_edge.training.distributed import World

    assert World(size=n).lr_scale(32, ref) * 1e-3 == pytest.approx(expected)


@pytest.fixture(scope="module")
def wrapped_run(tmp_path_factory):
    """``hrnet-edge train --nproc 2`` (the CLI starts torchrun: 2 gloo processes, batch 4
    each, one epoch of 16 images, bf16 autocast with the CPU's synchronised BatchNorm) on
    the tiny run, with a tiny [qat] section; its output and run directory."""
    tmp = tmp_path_factory.mktemp("wrapped")
    cfg = tmp / "c.toml"
    text = CONFIG.format(batch=4, per_class=8, epochs=1).replace("[train]\n", '[train]\nprecision = "bf16"\n')
    cfg.write_text(text + "[qat]\ncalibration_images = 4\nepochs = 1\nbatch_size = 4\n")
    out = _command(tmp, [sys.executable, "-m", "hrnet_edge.cli", "train", "--nproc", "2", "--config", str(cfg),
                         "--run", str(tmp / "run"), "--no-progress"])
    return out, tmp / "run"


def test_train_nproc_through_the_cli_ends_with_a_finished_run(wrapped_run):
    import math

    from hrnet_edge.runs import open_run, require_trained, training_state

    out, root = wrapped_run
    assert "[train] 2 processes: torchrun --standalone --nproc-per-node=2" in out
    assert out.count("[train] device cpu (") == 1 and ", bf16 autocast, 2 processes" in out  # process 0 logs
    run, cfg = open_run(root)
    require_trained(run, cfg)  # RunDirError unless the last checkpoint reached [train] epochs
    state = training_state(run)
    assert state["epoch"] == 1 and state["step"] == 2  # 16 images / (2 processes x batch 4)
    assert [(r["device"], r["precision"], r["processes"]) for r in state["ran_on"]] == [("cpu", "bf16", 2)]
    assert math.isfinite(state["history"][0]["train_loss"])


def test_train_processes_in_the_config_start_torchrun_and_nproc_overrides_it(tmp_path):
    """``[train] processes = 2`` (what the detection quick recipe sets): ``hrnet-edge train``
    starts torchrun without ``--nproc``; ``--nproc 1`` trains the same run config in one
    process."""
    from hrnet_edge.runs import training_state
    from hrnet_edge.runs import open_run

    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(batch=4, per_class=8, epochs=1).replace("[train]\n", "[train]\nprocesses = 2\n"))
    base = [sys.executable, "-m", "hrnet_edge.cli", "train", "--config", str(cfg), "--no-progress"]
    out = _command(tmp_path, [*base, "--run", str(tmp_path / "two")])
    assert "[train] 2 processes: torchrun --standalone --nproc-per-node=2" in out
    assert "OMP_NUM_THREADS" not in out  # torchrun's notice: the command sets one thread itself
    state = training_state(open_run(tmp_path / "two")[0])
    assert state["step"] == 2 and [r["processes"] for r in state["ran_on"]] == [2]  # 16 / (2 x 4)
    out = _command(tmp_path, [*base, "--nproc", "1", "--run", str(tmp_path / "one")])
    assert "processes:" not in out and "[train] best" in out
    run, loaded = open_run(tmp_path / "one")
    state = training_state(run)
    assert loaded.train.processes == 2 and state["step"] == 4 and [r["processes"] for r in state["ran_on"]] == [1]


def test_qat_under_torchrun_gives_a_finished_qat_stage(wrapped_run):
    """``torchrun -m hrnet_edge.cli qat`` with 2 processes: process 0 alone logs and writes;
    the stage is finished (metrics.json with the QAT files' hashes), and a second run
    keeps it, as a one-process qat does."""
    import math

    from hrnet_edge.deps import available
    from hrnet_edge.io import read_json
    from hrnet_edge.pipeline.stages import qat_stale_reason
    from hrnet_edge.runs import open_run

    if not available("nncf"):
        pytest.skip("nncf is not installed (pip install 'hrnet-edge[qat]')")
    _, root = wrapped_run
    tmp = root.parent
    qat = [*TORCHRUN, "--nproc-per-node=2", "-m", "hrnet_edge.cli", "qat", "--run-dir", str(root), "--no-progress"]
    out = _command(tmp, qat)
    assert out.count("[qat] device cpu (") == 1 and out.count("[qat] INT8 after 1 QAT epoch(s)") == 1, out[-2000:]
    run, _cfg = open_run(root)
    assert qat_stale_reason(run) is None  # finished, and its files are the ones it recorded
    metrics = read_json(run.qat_dir / "metrics.json")
    assert metrics["ran_on"]["processes"] == 2 and metrics["ran_on"]["precision"] == "fp32"
    assert len(metrics["history"]) == 1 and math.isfinite(metrics["history"][0]["train_loss"])
    assert sorted(p.name for p in run.qat_dir.iterdir()) == ["metrics.json", "qat.safetensors", "qat_config.json"]
    assert sorted(p.name for p in (root / "logs").iterdir()) == ["qat.log", "train.log"]
    assert "exists; --force to redo" in _command(tmp, qat)  # the same resume rule as one process
    assert read_json(run.qat_dir / "metrics.json") == metrics
