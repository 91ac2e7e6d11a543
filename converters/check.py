"""Check one artifact against the PyTorch model it came from.

For every artifact, on the held-out validation images: parity of the raw outputs
(max/mean abs error, PSNR, cosine), agreement of the decoded keypoints, the task
metric (OKS AP), host latency at a fixed thread count (warm-up, then timed runs,
p50/p90) and the process's peak memory. Each artifact is checked in its own process
(``python -m converters.check RUN TARGET PRECISION``) so its peak memory is its own and
a crashing runtime cannot take the whole check down.
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hrnet_edge.io import read_json, sha256_file, size_bytes, write_json
from converters.thresholds import THRESHOLDS, failures


def parity_stats(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Max/mean abs error, PSNR (peak = the reference's range) and cosine similarity."""
    ref = ref.astype(np.float64).ravel()
    out = out.astype(np.float64).ravel()
    if ref.shape != out.shape:
        raise ValueError(f"output has {out.size} values, reference {ref.size}")
    diff = out - ref
    mse = float(np.mean(diff**2))
    peak = float(ref.max() - ref.min()) or 1.0
    denom = float(np.linalg.norm(ref) * np.linalg.norm(out)) or 1.0
    return {
        "max_abs": float(np.abs(diff).max()),
        "mean_abs": float(np.abs(diff).mean()),
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse)),
        "cosine": float(np.dot(ref, out) / denom),
    }


def measure_latency(runner, x: np.ndarray, warmup: int, iterations: int) -> dict[str, float]:
    """Warm up, then time ``iterations`` single calls; percentiles in milliseconds."""
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


def _artifact_hash(art_dir: Path) -> str:
    return "".join(sha256_file(p) for p in artifact_files(art_dir))


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
    write_json(art_dir / INSPECT_FILE, {"artifact_sha256": _artifact_hash(art_dir), "inspect": facts})


def inspection(target, art_dir: Path) -> dict[str, Any]:
    """The artifact's inspection: the recorded one when it matches the artifact's hash,
    else computed now."""
    art_dir = Path(art_dir)
    cached = art_dir / INSPECT_FILE
    if cached.is_file():
        data = read_json(cached)
        if data.get("artifact_sha256") == _artifact_hash(art_dir):
            return data["inspect"]
    return target.inspect(art_dir)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def check_artifact(run_root: Path, target: str, precision: str) -> dict[str, Any]:
    """Check one exported artifact (or a PyTorch reference: target ``pytorch``)."""
    from hrnet_edge.runs import open_run
    from converters import references

    run, cfg = open_run(run_root)
    row: dict[str, Any] = {"target": target, "precision": precision}
    ctx = references.load_context(run, cfg)
    if target == "pytorch":
        runner, source = references.pytorch_runner(ctx, precision), "itself"
        row.update(artifact=None, size_bytes=ctx.checkpoint_size(precision))
        rss_before = _rss_mb()
    else:
        from converters.registry import get_target

        tgt = get_target(target)
        art_dir = run.export_dir(target, precision)
        meta = read_json(art_dir / "metadata.json")
        source = meta.get("source_model", "fp32")
        files = artifact_files(art_dir)
        row.update(artifact=str(files[0].relative_to(run.root)),
                   size_bytes=sum(size_bytes(p) for p in files),
                   inspect=inspection(tgt, art_dir))
        ok, reason = tgt.runnable()
        if not ok:
            row.update(status="not_runnable", reason=reason)
            return row
        rss_before = _rss_mb()
        runner = tgt.load(art_dir, threads=cfg.check.threads)
    row["reference"] = source
    evaluation = ctx.evaluate(runner, batch_size=ctx.batch_size_for(target))
    row["metric"] = evaluation.metrics
    if target == "pytorch":
        ctx.save_reference(precision, evaluation)
        row.update(status="reference", reason="")
    else:
        ref_eval = ctx.reference_eval(source)
        row["parity"] = parity_stats(ref_eval.heatmaps, evaluation.heatmaps)
        row["parity"]["keypoint_agreement"] = ctx.agreement(ref_eval, evaluation)
        ref_ap = ref_eval.metrics["AP"]
        row["ap_drop"] = float(ref_ap - evaluation.metrics["AP"])
        row["thresholds"] = THRESHOLDS[precision]
        broken = failures(precision, row["parity"], row["ap_drop"])
        row["status"] = "failed" if broken else "passed"
        row["reason"] = "; ".join(broken)
    row["latency"] = measure_latency(runner, ctx.latency_input(), cfg.check.warmup, cfg.check.iterations)
    row["latency"]["threads"] = cfg.check.threads
    runtime = {k: getattr(runner, k) for k in ("config", "inference_precision") if hasattr(runner, k)}
    if hasattr(runner, "executed_precisions"):  # what the kernels ran, from the execution graph
        runtime["convolutions"] = runner.executed_precisions()
    if runtime:  # e.g. OpenVINO: the hint asked for and the precision the plugin used
        row["runtime"] = runtime
        used = str(runtime.get("inference_precision", ""))
        if precision == "bf16" and used and used != "bf16":
            row["reason"] = (row.get("reason", "") + "; " if row.get("reason") else "") + \
                f"this CPU has no bf16 support: the plugin ran {used}"
    row["rss_before_load_mb"] = rss_before
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: ru_maxrss survives
    exec, so a check process forked from a large pipeline reported the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """``python -m converters.check RUN TARGET PRECISION``: writes checks/<t>-<p>.json."""
    argv = sys.argv[1:] if argv is None else argv
    run_root, target, precision = Path(argv[0]), argv[1], argv[2]
    from hrnet_edge.runs import RunDir

    out = RunDir(run_root).check_path(target, precision)
    try:
        row = check_artifact(run_root, target, precision)
    except Exception as exc:  # recorded in the report as an error row, never lost
        row = {"target": target, "precision": precision, "status": "error",
               "reason": f"{type(exc).__name__}: {exc}"}
        write_json(out, row)
        raise
    write_json(out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
