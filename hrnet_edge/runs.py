"""The run directory: fixed paths for every stage, the resolved config, env versions.

Every stage reads what the stage before it wrote, so any stage can be re-run alone on
an existing run directory.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hrnet_edge.errors import RunDirError
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

    An existing run keeps its configuration: re-running with a different one is an
    error rather than a silent mix of two configurations.
    """
    run = RunDir(Path(root))
    run.root.mkdir(parents=True, exist_ok=True)
    if run.config_path.exists():
        existing = load_config(run)
        if existing.to_dict() != cfg.to_dict():
            raise RunDirError(
                f"{run.root} already holds a run with a different configuration; "
                "use a new --run directory or omit --config to reuse the stored one"
            )
    else:
        write_json(run.config_path, cfg.to_dict())
    write_json(run.env_path, environment())
    return run


def open_run(root: str | Path) -> tuple[RunDir, RunConfig]:
    """Open an existing run directory and its resolved configuration."""
    run = RunDir(Path(root))
    if not run.config_path.is_file():
        raise RunDirError(f"{run.root} is not a run directory (no config.json); "
                          "start one with 'hrnet-edge train' or 'hrnet-edge pipeline'")
    return run, load_config(run)


def load_config(run: RunDir) -> RunConfig:
    return run_config_from_dict(read_json(run.config_path))


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
