"""``hrnet-edge bundle``: one zip with what a user copies to a device.

The artifacts named (checked against the sha256 in their ``metadata.json``), the device
runtime's source, sample inputs from the run's validation split with each artifact's
expected raw and decoded outputs (computed here through the runtime's own adapters and
decoders) and a README with the commands for each device. Everything is computed before
the zip is written; a bad input raises :class:`~converters.bundle.BundleError` and
writes nothing.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from converters.bundle import BundleError, artifact_entries, build_readme, check_out, runtime_entries, write_zip

DEFAULT_SAMPLES = 4
SAMPLES_SCHEMA = "hrnet-edge-samples"  # read by hrnet_edge_runtime.samples
SAMPLES_VERSION = 1


def exported_artifacts(run) -> list[str]:
    """Names (``<target>-<precision>``) of the run's export folders that hold a metadata.json."""
    if not run.exports.is_dir():
        return []
    return sorted(p.name for p in run.exports.iterdir() if (p / "metadata.json").is_file())


def resolve_artifacts(run, names: list[str]) -> list:
    """Load and hash-check the named artifacts (duplicates dropped, order kept).

    Raises:
        BundleError: a name the run has not exported (listing those it has), an
            unreadable metadata.json or a file whose sha256 differs from it.
    """
    from hrnet_edge_runtime.errors import RuntimeErrorBase
    from hrnet_edge_runtime.metadata import load_artifact, verify_sha256

    if not names:
        raise BundleError("--artifacts: name at least one, e.g. onnx-fp32")
    have = exported_artifacts(run)
    out = []
    for name in dict.fromkeys(names):
        if name not in have:
            raise BundleError(f"unknown artifact {name!r}; {run.exports} has: {', '.join(have) or 'none'}")
        try:
            art = load_artifact(run.exports / name)
            verify_sha256(art)
        except RuntimeErrorBase as exc:
            raise BundleError(f"artifact {name}: {exc}") from exc
        if f"{art.target}-{art.precision}" != name:
            raise BundleError(f"{run.exports / name}: its metadata.json says {art.target}-{art.precision}")
        out.append(art)
    return out


def sample_images(run, cfg, n: int) -> tuple[np.ndarray, list[int]]:
    """``n`` validation images, evenly spaced over the split: NCHW float32 RGB in 0..1,
    as the run's checks feed them, and their indices."""
    _train, val = cfg.task.datasets(run, cfg)
    if len(val) == 0:
        raise BundleError(f"{run.root}: the validation split has no images to take samples from")
    idx = sorted({int(round(i)) for i in np.linspace(0, len(val) - 1, min(n, len(val)))})
    return np.asarray(val.stack_images(idx), np.float32), idx


def artifact_input(x: np.ndarray, spec) -> np.ndarray:
    """One NCHW float image as ``spec`` (an artifact's InputSpec) takes it, converted as
    the host checks convert (:func:`converters.base.adapter_input`)."""
    from converters.base import adapter_input

    out = adapter_input(x, spec)
    if tuple(out.shape) != tuple(spec.shape):
        raise BundleError(f"the run's validation images give {tuple(out.shape)}, the artifact takes "
                          f"{tuple(spec.shape)}: it was exported at another input size")
    return out


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _png(pixels_hwc: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels_hwc, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def sample_entries(run, cfg, artifacts: list, n: int, threads: int = 1) -> tuple[dict[str, bytes], dict]:
    """``samples/...`` entries and the manifest: for each artifact, the inputs it takes,
    its raw outputs and decoded results, computed on this host through the runtime's
    adapter and decoder. An artifact whose runtime cannot run here (Core ML off macOS)
    keeps its inputs and records why it has no expected outputs."""
    from hrnet_edge_runtime.adapters import open_adapter
    from hrnet_edge_runtime.decode import decoder_for
    from hrnet_edge_runtime.errors import RuntimeErrorBase, RuntimeUnavailable
    from hrnet_edge_runtime.result import jsonable

    from converters.base import to_uint8_nhwc

    images, indices = sample_images(run, cfg, n)
    names = [f"{i:03d}" for i in range(len(indices))]
    entries = {f"samples/{name}.png": _png(to_uint8_nhwc(images[k:k + 1])[0]) for k, name in enumerate(names)}
    manifest = {"schema": SAMPLES_SCHEMA, "schema_version": SAMPLES_VERSION, "count": len(names),
                "split": cfg.data.val_split, "indices": indices, "images": [f"{s}.png" for s in names],
                "artifacts": {}}
    for art in artifacts:
        key = f"{art.target}-{art.precision}"
        inputs = [artifact_input(images[k:k + 1], art.input) for k in range(len(names))]
        entry: dict[str, Any] = {"sha256": art.sha256, "input": art.input.as_dict(), "samples": [],
                                 "inputs": [f"{key}/{s}.input.npy" for s in names]}
        for s, x in zip(names, inputs):
            entries[f"samples/{key}/{s}.input.npy"] = _npy(x)
        try:
            adapter = open_adapter(art, device="CPU", threads=threads)
        except RuntimeUnavailable as exc:
            if art.target != "coreml":
                raise BundleError(f"artifact {key}: cannot compute its sample outputs here: {exc}") from exc
            entry["reason"] = f"not computed on this host: {exc}"
            manifest["artifacts"][key] = entry
            continue
        try:
            with adapter:
                info = adapter.info()
                decoder = decoder_for(art.meta)
                for s, x in zip(names, inputs):
                    y = np.asarray(adapter.run(x), np.float32)
                    entries[f"samples/{key}/{s}.expected.npy"] = _npy(y)
                    entries[f"samples/{key}/{s}.decoded.json"] = _json(jsonable(decoder.decode(y)))
                    entry["samples"].append({"name": s, "input": f"{key}/{s}.input.npy",
                                             "expected": f"{key}/{s}.expected.npy",
                                             "decoded": f"{key}/{s}.decoded.json"})
        except RuntimeErrorBase as exc:
            raise BundleError(f"artifact {key}: running the samples failed: {exc}") from exc
        entry["host"] = {"runtime": info["name"], "version": info["version"], "device": "CPU"}
        manifest["artifacts"][key] = entry
    entries["samples/manifest.json"] = _json(manifest)
    return entries, manifest


def make_bundle(run_root: str | Path, names: list[str], out: str | Path, samples: int = DEFAULT_SAMPLES,
                force: bool = False) -> dict[str, Any]:
    """Build the bundle zip of ``names`` from the run at ``run_root`` into ``out``.

    Returns:
        {"out", "files", "bytes", "artifacts", "samples"}.

    Raises:
        BundleError (and the run's own errors): nothing is written then.
    """
    from hrnet_edge.runs import open_run

    out = Path(out)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise BundleError(f"--samples must be at least 1, got {samples!r}")
    check_out(out, force)  # before the samples are computed
    run, cfg = open_run(run_root)
    artifacts = resolve_artifacts(run, list(names))
    entries: dict[str, bytes] = {}
    for art in artifacts:
        entries.update(artifact_entries(art))
    entries.update(runtime_entries())
    sample_files, manifest = sample_entries(run, cfg, artifacts, samples)
    entries.update(sample_files)
    entries["README.md"] = build_readme(str(run_root), artifacts, manifest).encode()
    write_zip(out, entries, force=force)
    return {"out": str(out), "files": len(entries), "bytes": out.stat().st_size,
            "artifacts": [f"{a.target}-{a.precision}" for a in artifacts], "samples": manifest["count"]}
