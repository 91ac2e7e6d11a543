"""Check one artifact against the PyTorch model it came from.

For every artifact, on the held-out validation images: parity of the raw outputs
(max |error| relative to the reference's range, PSNR, cosine), the task's agreement of
decoded predictions, the task metric and its drop, host latency at a fixed thread
count (warm-up, then timed runs, p50/p90) and the process's peak memory. Each artifact
is checked in its own process (``python -m hrnet_edge.pipeline.checking RUN TARGET
PRECISION``) so its peak memory is its own and a crashing runtime cannot take the whole
check down. Two such processes run at once; each times its artifact alone
(:mod:`hrnet_edge.pipeline.cpu_share`). The heavy imports wait inside the functions, so
a process starting beside a measurement does not disturb it before taking its lock.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hrnet_edge.io import read_json, size_bytes, write_json
from hrnet_edge.pipeline import cpu_share


def check_artifact(run_root: Path, target: str, precision: str) -> dict[str, Any]:
    """Check one exported artifact (or a PyTorch reference: target ``pytorch``)."""
    from converters.base import quantized_as
    from converters.check import (artifact_files, artifact_hash, inspection, measure_latency,
                                  peak_rss_mb, rss_mb, runtime_facts)
    from hrnet_edge.pipeline import references
    from hrnet_edge.runs import open_run

    run, cfg = open_run(run_root)
    ctx = references.load_context(run, cfg)
    task = ctx.task
    row: dict[str, Any] = {"target": target, "precision": precision, "task": task.name,
                           "metric_name": task.metric}
    if target == "pytorch":
        from hrnet_edge.pipeline.stages import reference_source_sha256

        runner, source = references.pytorch_runner(ctx, precision), "itself"
        row.update(artifact=None, size_bytes=ctx.checkpoint_size(precision),
                   source_sha256=reference_source_sha256(run, precision))
        rss_before = rss_mb()
    else:
        from converters.registry import get_target

        tgt = get_target(target)
        art_dir = run.export_dir(target, precision)
        meta = read_json(art_dir / "metadata.json")
        source = meta.get("source_model", "fp32")
        files = artifact_files(art_dir)
        sha = artifact_hash(art_dir)  # hashed once: recorded, and the cached inspection's key
        row.update(artifact=str(files[0].relative_to(run.root)), artifact_sha256=sha,
                   size_bytes=sum(size_bytes(p) for p in files),
                   inspect=inspection(tgt, art_dir, sha))
        warnings = [n for n in meta.get("notes", []) if str(n).startswith("warning:")]
        if warnings:  # e.g. ops left out of XNNPACK: shown in the report's note column
            row["warnings"] = warnings
        ok, reason = tgt.runnable()
        if not ok:
            row.update(status="not_runnable", reason=reason)
            return row
        rss_before = rss_mb()
        runner = tgt.load(art_dir, threads=cfg.check.threads)
    row["reference"] = source
    evaluation = ctx.evaluate(runner, target)
    row["metric"] = evaluation.metrics
    if target == "pytorch":
        ctx.save_reference(precision, evaluation)
        row.update(status="reference", reason="")
    else:
        ref_eval = ctx.reference_eval(source)
        row["parity"] = task.parity(ref_eval, evaluation, ctx.val_ds)
        row["metric_drop"] = float(ref_eval.metrics[task.metric] - evaluation.metrics[task.metric])
        row["thresholds"] = task.thresholds[quantized_as(precision)]
        broken = task.failures(quantized_as(precision), row["parity"], row["metric_drop"])
        row["status"] = "failed" if broken else "passed"
        row["reason"] = "; ".join(broken)
    natural = ctx.natural_parity(runner, target, precision, source)
    if natural is not None:  # informative: not a pass/fail threshold (yet)
        row["parity_natural"] = natural
    warmup, iterations = cfg.check.warmup, cfg.check.iterations
    if target == "pytorch" and quantized_as(precision) == "int8":
        # NNCF's model simulates INT8 in float (fake quantization, ~10x slower than FP32):
        # its time says nothing about an INT8 runtime, so a few runs suffice
        warmup, iterations = min(warmup, 2), min(iterations, 10)
    latency_input = ctx.latency_input()
    with cpu_share.alone():  # timed while no other check process works
        row["latency"] = measure_latency(runner, latency_input, warmup, iterations)
    row["latency"]["threads"] = cfg.check.threads
    runtime = runtime_facts(runner)
    if runtime:
        row["runtime"] = runtime
        used = str(runtime.get("inference_precision", ""))
        if precision == "bf16" and used and used != "bf16":
            row["reason"] = (row.get("reason", "") + "; " if row.get("reason") else "") + \
                f"this CPU has no bf16 support: the plugin ran {used}"
    row["rss_before_load_mb"] = rss_before
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def main(argv: list[str] | None = None) -> int:
    """``python -m hrnet_edge.pipeline.checking RUN TARGET PRECISION``: writes checks/<t>-<p>.json."""
    argv = sys.argv[1:] if argv is None else argv
    run_root, target, precision = Path(argv[0]), argv[1], argv[2]
    from hrnet_edge.runs import RunDir

    out = RunDir(run_root).check_path(target, precision)
    cpu_share.hold_for_life(out.parent)  # first: nothing of this process runs into a measurement
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
