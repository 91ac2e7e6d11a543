"""report.json, report.md and pareto.png from the check rows of a run."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from hrnet_edge.io import atomic_path, read_json, write_json, write_text
from hrnet_edge.runs import RunDir

STATUS_TEXT = {"passed": "passed", "failed": "FAILED", "skipped": "skipped", "not_runnable": "not runnable here",
               "reference": "reference", "error": "ERROR", "exported": "not checked"}


def build_report(run: RunDir, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write report.json, report.md and pareto.png; return the report dict."""
    env = read_json(run.env_path) if run.env_path.is_file() else {}
    from hrnet_edge.runconfig import run_config_from_dict

    cfg = run_config_from_dict(read_json(run.config_path))
    task = cfg.task
    qat = read_json(run.qat_dir / "metrics.json") if (run.qat_dir / "metrics.json").is_file() else None
    report = {
        "run": str(run.root),
        "model": cfg.model,
        "task": task.name,
        "metric": task.metric,
        "metric_label": task.metric_label,
        "agreement_label": task.agreement_label,
        "eval_note": task.eval_note(cfg),
        "input_size": list(cfg.model_config().input_size),
        "eval": dataclasses.asdict(cfg.eval),
        "machine": {k: env.get(k) for k in ("processor", "cpu_count", "platform")},
        "versions": env.get("versions", {}),
        "qat": qat and {k: qat[k][task.metric] for k in ("fp32", "ptq", "qat")},
        "rows": rows,
        "summary": {s: sum(r.get("status") == s for r in rows) for s in STATUS_TEXT},
    }
    write_json(run.report_json, report)
    write_text(run.report_md, render_markdown(report))
    plot_pareto(run.root / "pareto.png", rows, task.metric, task.metric_label)
    return report


def _f(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per target x precision."""
    lines = [f"# hrnet-edge report: {report['model']}", ""]
    m = report["machine"]
    lines.append(f"Host: {m.get('processor')} ({m.get('cpu_count')} cores); latency at a fixed thread count, "
                 "batch 1, after warm-up. Parity is against the PyTorch model each artifact came from "
                 "(`reference`: fp32 = the trained float model, qat = the NNCF QAT model).")
    label, metric = report["metric_label"], report["metric"]
    lines.append(f"\n{report['eval_note']}; input {report['input_size']}.")
    if report.get("qat"):
        q = report["qat"]
        lines.append(f"\n{label} in PyTorch: FP32 {q['fp32']:.4f}, INT8 after NNCF init {q['ptq']:.4f}, "
                     f"INT8 after QAT {q['qat']:.4f}.")
    lines += ["", "| target | precision | status | size (KB) | ref | max abs / range | PSNR dB | cosine | "
              f"{report['agreement_label']} | {label} | drop | p50 ms | p90 ms | peak MB | note |",
              "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        par, lat, met = r.get("parity", {}), r.get("latency", {}), r.get("metric", {})
        size = r.get("size_bytes")
        note = (r.get("reason") or "").replace("|", "/")
        if len(note) > 120:
            note = note[:117] + "..."
        lines.append("| " + " | ".join([
            r["target"], r["precision"], STATUS_TEXT.get(r.get("status"), str(r.get("status"))),
            _f(size / 1024 if size else None, ".0f"), r.get("reference", "-"),
            _f(par.get("rel_max_abs"), ".2e"), _f(par.get("psnr_db"), ".1f"), _f(par.get("cosine"), ".5f"),
            _f(par.get("agreement"), ".3f"), _f(met.get(metric), ".4f"), _f(r.get("metric_drop"), "+.4f"),
            _f(lat.get("p50_ms"), ".2f"), _f(lat.get("p90_ms"), ".2f"), _f(r.get("peak_rss_mb"), ".0f"), note,
        ]) + " |")
    s = report["summary"]
    lines += ["", "Summary: " + ", ".join(f"{v} {k}" for k, v in s.items() if v), ""]
    return "\n".join(lines)


def plot_pareto(path: Path, rows: list[dict[str, Any]], metric: str, label: str) -> None:
    """Latency (p50) against the task metric, one point per target x precision that ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["latency"]["p50_ms"], r["metric"][metric], f"{r['target']}-{r['precision']}")
           for r in rows if r.get("latency") and r.get("metric")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for x, y, name in pts:
        ax.scatter(x, y)
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency p50 (ms, host CPU, batch 1)")
    ax.set_ylabel(f"{label} (validation)")
    ax.set_title("latency vs accuracy per target x precision")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def failed_rows(report: dict[str, Any]) -> list[dict]:
    """Rows that make the check command exit non-zero."""
    return [r for r in report["rows"] if r.get("status") in ("failed", "error")]
