"""Check an artifact on this device against the sample outputs of a bundle.

``hrnet-edge bundle`` writes a ``samples/`` folder beside the artifacts::

    samples/manifest.json             schema "hrnet-edge-samples", version 1
    samples/000.png ...               the sample inputs as pictures (for people)
    samples/<target>-<precision>/000.input.npy     the exact array the host fed
    samples/<target>-<precision>/000.expected.npy  the raw output the host got
    samples/<target>-<precision>/000.decoded.json  the decoded result on the host

:func:`verify_samples` runs every input through an opened adapter and compares the
output with the host's. Tolerances depend on the precision, since the same artifact
rounds differently on another CPU: fp32 max |difference| / output range <= 1e-4,
fp16/bf16 <= 3e-2, int8/int8u8 a correlation > 0.99 and max |difference| / range < 0.1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hrnet_edge_runtime.errors import ArtifactError, UsageError
from hrnet_edge_runtime.metadata import Artifact, read_json_file

SCHEMA = "hrnet-edge-samples"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# precision -> (max |diff| / range allowed, minimum correlation or None)
TOLERANCES: dict[str, tuple[float, float | None]] = {
    "fp32": (1e-4, None), "fp16": (3e-2, None), "bf16": (3e-2, None),
    "int8": (0.1, 0.99), "int8u8": (0.1, 0.99),
}


class SampleMismatch(Exception):
    """A sample's output is outside the tolerance (``hrnet-edge-run`` exits 1)."""


def compare(out: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """``max_abs_over_range`` (max |out - expected| over the expected output's range)
    and ``correlation`` (Pearson, 1.0 for two equal constant arrays)."""
    a = np.asarray(out, np.float64).ravel()
    b = np.asarray(expected, np.float64).ravel()
    span = float(b.max() - b.min()) if b.size else 0.0
    diff = float(np.abs(a - b).max()) if b.size else 0.0
    ratio = diff / span if span > 0 else (0.0 if diff == 0 else float("inf"))
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        corr = 1.0 if diff == 0 else 0.0
    else:
        corr = float(np.clip(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb), -1.0, 1.0))
    return {"max_abs_over_range": ratio, "correlation": corr}


def within(precision: str, stats: dict[str, float]) -> bool:
    """Whether ``stats`` (from :func:`compare`) are inside ``precision``'s tolerance."""
    limit, min_corr = TOLERANCES[precision]
    if min_corr is not None:
        return stats["correlation"] > min_corr and stats["max_abs_over_range"] < limit
    return stats["max_abs_over_range"] <= limit


def load_samples(folder: str | Path, artifact: Artifact) -> tuple[str, list[dict[str, Any]]]:
    """The samples of ``artifact`` in a bundle's ``samples/`` folder.

    Returns:
        (the artifact's name, a list of {"name", "input", "expected": arrays, "path"}).

    Raises:
        UsageError: no such folder, a manifest of another schema, no samples (or no
            expected outputs) for this artifact, or samples made for other model files.
        ArtifactError: an input of the wrong shape or dtype, or an unreadable file.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise UsageError(f"--samples {folder}: no {MANIFEST} (expected a bundle's samples/ folder)")
    manifest = read_json_file(path)
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA \
            or manifest.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{path}: not a samples manifest (schema {SCHEMA!r}, version {SCHEMA_VERSION})")
    name = f"{artifact.target}-{artifact.precision}"
    entry = (manifest.get("artifacts") or {}).get(name)
    if not isinstance(entry, dict):
        have = ", ".join(sorted(manifest.get("artifacts") or {})) or "none"
        raise UsageError(f"{path}: no samples for {name} (it has: {have})")
    if entry.get("sha256") != artifact.sha256:
        raise UsageError(f"{path}: the samples of {name} were made for other model files "
                         "(sha256 differs); bundle this artifact again")
    if not entry.get("samples"):
        raise UsageError(f"{path}: no expected outputs for {name}: {entry.get('reason') or 'none recorded'}")
    out = []
    for s in entry["samples"]:
        x = _npy(folder / s["input"])
        spec = artifact.input
        if x.dtype != np.dtype(spec.dtype) or tuple(x.shape) != tuple(spec.shape):
            raise ArtifactError(f"{folder / s['input']}: {x.dtype} {tuple(x.shape)}, the artifact takes "
                                f"{spec.dtype} {tuple(spec.shape)}")
        out.append({"name": s["name"], "input": x, "expected": _npy(folder / s["expected"]),
                    "path": str(folder / s["expected"])})
    return name, out


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable .npy array ({exc})") from exc


def verify_samples(adapter, folder: str | Path) -> dict[str, Any]:
    """Run the bundle's samples through ``adapter`` and compare with the host's outputs.

    Returns:
        ``{"count", "max_abs_over_range" (the largest), "correlation" (the smallest),
        "passed", "tolerance", "failed"}``; ``failed`` is a one-line description of the
        first sample outside the tolerance, or None.
    """
    art = adapter.artifact
    name, samples = load_samples(folder, art)
    limit, min_corr = TOLERANCES[art.precision]
    worst_ratio, worst_corr, failed = 0.0, 1.0, None
    for s in samples:
        y = np.asarray(adapter.run(s["input"]))
        if y.shape != s["expected"].shape:
            stats = {"max_abs_over_range": float("inf"), "correlation": 0.0}
            why = f"output shape {y.shape}, expected {s['expected'].shape}"
        else:
            stats = compare(y, s["expected"])
            why = (f"max |diff| / range {stats['max_abs_over_range']:.3g} (limit {limit:g}), "
                   f"correlation {stats['correlation']:.5f}" + (f" (limit > {min_corr:g})" if min_corr else ""))
        worst_ratio = max(worst_ratio, stats["max_abs_over_range"])
        worst_corr = min(worst_corr, stats["correlation"])
        if failed is None and not within(art.precision, stats):
            failed = f"sample {s['name']} of {name} ({s['path']}) differs: {why}"
    tolerance = {"max_abs_over_range": limit}
    if min_corr is not None:
        tolerance["min_correlation"] = min_corr
    return {"count": len(samples), "max_abs_over_range": _finite(worst_ratio),
            "correlation": _finite(worst_corr), "passed": failed is None, "tolerance": tolerance,
            "failed": failed}


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
