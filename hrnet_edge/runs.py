"""The run directory: fixed paths for every stage, the resolved config, env versions.

Every stage reads what the stage before it wrote, so any stage can be re-run alone on
an existing run directory.
"""
from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hrnet_edge.errors import ConfigError, RunDirError
from hrnet_edge.io import read_json, write_json
from hrnet_edge.runconfig import RunConfig, run_config_from_dict

BACKENDS = ("torch", "numpy", "nncf", "openvino", "onnx", "onnxruntime", "onnx2tf", "tensorflow",
            "ai-edge-litert", "coremltools", "executorch", "torchao", "pycocotools", "safetensors")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @property
    def config_path(self) -> Path: return self.root / "config.json"
    @property
    def env_path(self) -> Path: return self.root / "env.json"
    @property
    def checkpoints(self) -> Path: return self.root / "checkpoints"
    @property
    def metrics_csv(self) -> Path: return self.root / "metrics.csv"
    @property
    def qat_dir(self) -> Path: return self.root / "qat"
    @property
    def exports(self) -> Path: return self.root / "exports"
    @property
    def checks(self) -> Path: return self.root / "checks"
    @property
    def data_dir(self) -> Path: return self.root / "data"
    @property
    def report_json(self) -> Path: return self.root / "report.json"
    @property
    def report_md(self) -> Path: return self.root / "report.md"

    def export_dir(self, target: str, precision: str) -> Path:
        return self.exports / f"{target}-{precision}"

    def check_path(self, target: str, precision: str) -> Path:
        return self.checks / f"{target}-{precision}.json"

    def best_checkpoint(self) -> Path:
        path = self.checkpoints / "best.safetensors"
        if not path.is_file():
            raise RunDirError(
                f"{self.root} has no trained checkpoint ({path.name}); run 'hrnet-edge train "
                f"--run {self.root}' first"
            )
        return path


def init_run(root: str | Path, cfg: RunConfig) -> RunDir:
    """Create (or reuse) a run directory and write config.json and env.json.

    ``cfg`` has been checked in full before this is called, so a bad configuration
    never reaches the run directory. An existing run keeps its configuration:
    re-running with a different one is an error rather than a silent mix of two
    configurations, unless no stage has produced anything yet (a run that failed
    before its first checkpoint takes the corrected configuration).
    """
    run = RunDir(Path(root))
    check_writable(run.root)
    run.root.mkdir(parents=True, exist_ok=True)
    if run.config_path.exists():
        existing = load_config(run)
        if existing.to_dict() != cfg.to_dict():
            if has_outputs(run):
                raise RunDirError(
                    f"{run.root} already holds a run with a different configuration; "
                    "use a new --run directory or omit --config to reuse the stored one"
                )
            write_json(run.config_path, cfg.to_dict())
    else:
        write_json(run.config_path, cfg.to_dict())
    write_json(run.env_path, environment())
    return run


def has_outputs(run: RunDir) -> bool:
    """Whether any stage has written a result (a checkpoint, QAT, an export or a check)."""
    return any(d.is_dir() and any(p for p in d.iterdir() if not p.name.startswith("."))
               for d in (run.checkpoints, run.qat_dir, run.exports, run.checks))


def check_writable(root: Path) -> None:
    """RunDirError unless ``root`` is (or can be created as) a writable directory.

    Checked by writing a probe file, since permissions, read-only mounts and virtual
    file systems (/proc, /sys) all look alike to ``os.access`` when running as root.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunDirError(f"run directory {root} is a file, not a directory; name a directory with --run")
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"run directory {root} cannot be created: {probe} is a file, not a directory")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-probe.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise RunDirError(f"run directory {root} is not writable ({probe}: {exc.strerror or exc}); "
                          "choose a writable --run directory") from None


def open_run(root: str | Path) -> tuple[RunDir, RunConfig]:
    """Open an existing run directory and its resolved configuration."""
    run = RunDir(Path(root))
    if run.root.exists() and not run.root.is_dir():
        raise RunDirError(f"run directory {run.root} is a file, not a directory; name a directory with --run")
    if not run.config_path.is_file():
        raise RunDirError(f"{run.root} is not a run directory (no config.json); "
                          "start one with 'hrnet-edge train' or 'hrnet-edge pipeline'")
    return run, load_config(run)


def load_config(run: RunDir) -> RunConfig:
    """The run's stored configuration; a damaged config.json is a RunDirError."""
    try:
        data = read_json(run.config_path)
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            # written before [train] processes existed: those runs trained in one
            # process (or with --nproc), whatever the recipe says now
            data["train"].setdefault("processes", 1)
        return run_config_from_dict(data)
    except ConfigError as exc:
        raise RunDirError(f"{run.config_path} is not a valid run configuration ({exc}); "
                          "restore it or start a new --run directory") from None


def training_state(run: RunDir) -> dict | None:
    """The state of ``checkpoints/last`` (epoch, best ...), or None before the first epoch."""
    from hrnet_edge.training.checkpoint import read_state

    last = run.checkpoints / "last.safetensors"
    return read_state(last) if last.is_file() else None


def require_trained(run: RunDir, cfg: RunConfig) -> Path:
    """The best checkpoint of a run whose training finished; RunDirError otherwise.

    Completion is the last checkpoint's epoch reaching ``[train] epochs``, recorded in
    the same file as the weights, so a run killed mid-training is never taken for a
    finished one.
    """
    best = run.best_checkpoint()
    state = training_state(run)
    done = state.get("epoch", 0) if state else 0
    if done < cfg.train.epochs:
        raise RunDirError(f"training of {run.root} is unfinished (epoch {done} of {cfg.train.epochs}); "
                          f"run 'hrnet-edge train --run {run.root}' to finish it")
    return best


def environment() -> dict:
    """Python, torch and backend versions, git commit and machine facts."""
    versions = {}
    for dist in BACKENDS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "git_commit": _git_commit(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def tidy_run(run: RunDir) -> list[str]:
    """Recover what interrupted writes left in the run's folders (see
    :func:`hrnet_edge.io.recover_partials`); one line per thing done."""
    from hrnet_edge.io import recover_partials

    folders = [run.root, run.checkpoints, run.qat_dir, run.exports, run.checks, run.root / "intermediate"]
    if run.exports.is_dir():
        folders += sorted(p for p in run.exports.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [line for f in folders for line in recover_partials(f)]
