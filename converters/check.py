"""The measuring parts of a check: latency, memory, what the runtime ran, inspection.

The check itself (``hrnet_edge.pipeline.checking``) runs an artifact over the
validation split through its Target's runner and compares it with the PyTorch model it
came from, with the run's Task; these helpers know nothing about tasks or runs.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from hrnet_edge.io import read_json, sha256_file, write_json


def measure_latency(runner, x: np.ndarray, warmup: int, iterations: int) -> dict[str, float]:
    """Warm up, then time ``iterations`` single calls; percentiles in milliseconds.

    A :class:`converters.base.Runner` is timed on its prepared input (a uint8 artifact
    on uint8 pixels, as an app feeds it); any other callable on ``x``."""
    if hasattr(runner, "prepare") and hasattr(runner, "run"):
        x, runner = runner.prepare(x), runner.run
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "min_ms": float(t.min()), "iterations": iterations,
            "warmup": warmup}


INSPECT_FILE = "inspect.json"


def artifact_files(art_dir: Path) -> list[Path]:
    """The files (or package folder) of the model in an export folder: one, or two for
    OpenVINO's model.xml + model.bin (the .xml first)."""
    files = [p for p in Path(art_dir).iterdir() if p.name.startswith("model")]
    return sorted(files, key=lambda p: (p.suffix == ".bin", p.name))


def artifact_file(art_dir: Path) -> Path:
    """The file an app opens (OpenVINO: model.xml, which names its .bin)."""
    return artifact_files(art_dir)[0]


def artifact_hash(art_dir: Path) -> str:
    """The sha256 of the model file(s) in an export folder (OpenVINO: .xml's then .bin's)."""
    return "".join(sha256_file(p) for p in artifact_files(art_dir))


def integrity_problem(art_dir: Path) -> str | None:
    """Why the files of an export folder are not the ones its ``metadata.json`` records
    (missing, truncated, modified), or None when every sha256 matches."""
    from hrnet_edge.errors import CorruptFileError

    art_dir = Path(art_dir)
    meta_path = art_dir / "metadata.json"
    if not meta_path.is_file():
        return "metadata.json is missing"
    try:
        record = read_json(meta_path).get("artifact") or {}
    except (CorruptFileError, AttributeError):
        return "metadata.json is damaged"
    entries = [record] + list(record.get("companions", [])) if record.get("file") else []
    if not entries:
        return "metadata.json records no artifact sha256"
    for entry in entries:
        path = art_dir / entry["file"]
        if not path.exists():
            return f"{entry['file']} is missing"
        if sha256_file(path) != entry.get("sha256"):
            return (f"{entry['file']} does not match the sha256 in metadata.json "
                    "(truncated or modified after export)")
    return None


def save_inspection(target, art_dir: Path) -> None:
    """Record ``target.inspect`` beside a fresh artifact, keyed by the artifact's hash.

    The export process has the converter loaded already; a check process would need
    to import it again only to read a spec (coremltools pulls in torch, TensorFlow
    and ExecuTorch: about 20 s per Core ML check on 2 cores).
    """
    art_dir = Path(art_dir)
    (art_dir / INSPECT_FILE).unlink(missing_ok=True)
    try:
        facts = target.inspect(art_dir)
    except Exception:  # noqa: BLE001 - the check inspects again and reports the error there
        return
    write_json(art_dir / INSPECT_FILE, {"artifact_sha256": artifact_hash(art_dir), "inspect": facts})


def inspection(target, art_dir: Path, sha256: str | None = None) -> dict[str, Any]:
    """The artifact's inspection: the recorded one when it matches the artifact's hash
    (``sha256`` when the caller has it already), else computed now."""
    art_dir = Path(art_dir)
    cached = art_dir / INSPECT_FILE
    if cached.is_file():
        data = read_json(cached)
        if data.get("artifact_sha256") == (sha256 or artifact_hash(art_dir)):
            return data["inspect"]
    return target.inspect(art_dir)


def runtime_facts(runner) -> dict[str, Any]:
    """What the runtime really did, where it says (an artifact run through the device
    runtime's adapter): e.g. OpenVINO's hint, the precision the plugin chose and its
    convolution kernels per precision."""
    return runner.runtime_facts() if hasattr(runner, "runtime_facts") else {}


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: ru_maxrss survives
    exec, so a check process forked from a large pipeline reported the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
