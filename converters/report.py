"""report.json, report.md and pareto.png from the check rows of a run."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from converters.device_results import device_latency, load_device_rows, pair_with_checks
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
        "qat": qat and {**{k: qat[k][task.metric] for k in ("fp32", "ptq", "qat")},
                        "schedule": qat.get("schedule")},
        "rows": rows,
        "device_rows": pair_with_checks(load_device_rows(run), rows, task.metric),
        "summary": {s: sum(r.get("status") == s for r in rows) for s in STATUS_TEXT},
    }
    write_json(run.report_json, report)
    write_text(run.report_md, render_markdown(report))
    plot_pareto(run.root / "pareto.png", rows, task.metric, task.metric_label,
                machine=report["machine"].get("processor"),
                devices=device_points(report["device_rows"], task.metric))
    return report


def _f(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


QAT_NOISE = 0.005  # the pose default run's FP32 OKS AP moved 0.743-0.748 between re-runs of one recipe


def qat_verdict(ptq: float, qat: float, noise: float = QAT_NOISE) -> str:
    """One plain sentence: did QAT fine-tuning earn its place over NNCF's PTQ init?
    (Every metric here is higher-is-better; INT8 rows start from the QAT model.)"""
    gain = qat - ptq
    if gain > noise:
        return f"QAT gains {gain:+.4f} over post-training quantization."
    if gain < -noise:
        return (f"QAT is {-gain:.4f} below post-training quantization on this run: the QAT schedule "
                "([qat] epochs, steps_per_epoch, lr) hurts here.")
    return (f"QAT changes the metric by {gain:+.4f} over post-training quantization, within the "
            f"{noise} that re-runs of one recipe move it: QAT adds nothing measurable on this run.")


def _qat_schedule(schedule: dict[str, Any] | None) -> str:
    """The QAT run in words (empty for a run from before the schedule was recorded)."""
    if not schedule:
        return ""
    steps = f" of {schedule['steps_per_epoch']} steps" if schedule.get("steps_per_epoch") else ""
    correction = f" NNCF's bias correction {'on' if schedule.get('bias_correction', True) else 'off'}."
    if schedule.get("epochs") == 0:
        return correction
    return (f" QAT: {schedule['epochs']} epoch(s){steps} at batch {schedule['batch_size']}, "
            f"lr {schedule['lr']:g};{correction}")


def _photos(nat: dict[str, Any]) -> str:
    """The photo agreement, with the confident outputs' share in brackets where the task has one."""
    text = _f(nat.get("agreement"), ".3f")
    if nat.get("agreement_confident") is not None:
        text += f" ({nat['agreement_confident']:.3f})"
    return text


def _cell(value: Any) -> str:
    """One table cell: a multi-line error or a '|' inside a value must not break the row."""
    return " ".join(str(value).split()).replace("|", "/")


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per target x precision."""
    lines = [f"# hrnet-edge report: {report['model']}", ""]
    m = report["machine"]
    lines.append(f"Host: {m.get('processor')} ({m.get('cpu_count')} cores); latency at a fixed thread count, "
                 "batch 1, after warm-up. Parity is against the PyTorch model each artifact came from "
                 "(`reference`: fp32 = the trained float model, qat = the NNCF QAT model). "
                 "`on photos`: the same agreement on random crops of real photos that matplotlib and "
                 "scikit-learn ship (no labels; shown, not a pass/fail threshold); in brackets, over "
                 "the outputs the reference is confident about (pose: heatmap peak >= 0.2).")
    label, metric = report["metric_label"], report["metric"]
    lines.append(f"\n{report['eval_note']}; input {report['input_size']}.")
    if report.get("qat"):
        q = report["qat"]
        if (q.get("schedule") or {}).get("epochs") == 0:  # no fine-tuning: the INT8 model is NNCF's init
            said = (f"INT8 after NNCF init {q['ptq']:.4f}; no QAT fine-tuning ([qat] epochs = 0): the INT8 "
                    "rows start from that init.")
        else:
            said = (f"INT8 after NNCF init {q['ptq']:.4f}, INT8 after QAT {q['qat']:.4f}. "
                    f"{qat_verdict(q['ptq'], q['qat'])}")
        lines.append(f"\n{label} in PyTorch: FP32 {q['fp32']:.4f}, {said}" + _qat_schedule(q.get("schedule")))
    lines += ["", "| target | precision | status | size (KB) | ref | max abs / range | PSNR dB | cosine | "
              f"{report['agreement_label']} | on photos | {label} | drop | p50 ms | p90 ms | peak MB | note |",
              "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    # A reason several rows share (Core ML's "runs only on macOS") is said once, below.
    reasons = [" ".join("; ".join(filter(None, [r.get("reason") or ""] + list(r.get("warnings", [])))).split())
               for r in report["rows"]]
    shared = [t for t in dict.fromkeys(reasons) if t and reasons.count(t) > 1]
    for r, reason in zip(report["rows"], reasons):
        par, lat, met = r.get("parity", {}), r.get("latency", {}), r.get("metric", {})
        size = r.get("size_bytes")
        note = f"note {shared.index(reason) + 1}" if reason in shared else reason
        lines.append("| " + " | ".join(_cell(c) for c in [
            r.get("target", "?"), r.get("precision", "?"), STATUS_TEXT.get(r.get("status"), str(r.get("status"))),
            _f(size / 1024 if size else None, ".0f"), r.get("reference", "-"),
            _f(par.get("rel_max_abs"), ".2e"), _f(par.get("psnr_db"), ".1f"), _f(par.get("cosine"), ".5f"),
            _f(par.get("agreement"), ".3f"), _photos(r.get("parity_natural", {})),
            _f(met.get(metric), ".4f"), _f(r.get("metric_drop"), "+.4f"),
            _f(lat.get("p50_ms"), ".2f"), _f(lat.get("p90_ms"), ".2f"), _f(r.get("peak_rss_mb"), ".0f"), note,
        ]) + " |")
    s = report["summary"]
    lines += [""] + [f"Note {i}: {text}" for i, text in enumerate(shared, 1)]
    if report.get("device_rows"):
        lines += [""] + render_device_rows(report["device_rows"])
    lines += ["", "Summary: " + ", ".join(f"{v} {k}" for k, v in s.items() if v), ""]
    return "\n".join(lines)


def _runtime_text(rt: dict[str, Any]) -> str:
    text = " ".join(str(rt[k]) for k in ("name", "version") if rt.get(k))
    return (text + (f" ({rt['device']})" if rt.get("device") else "")).replace("|", "/") or "-"


def render_device_rows(device_rows: list[dict[str, Any]]) -> list[str]:
    """The "Measured on devices" section: one row per device x artifact, the host's
    p50 of the same artifact beside the device's."""
    lines = ["## Measured on devices", "",
             "Results brought back from devices (`hrnet-edge report --add`). p50 is the median the tool "
             "reports (benchmark_app: its latency at percentile 50; litert-benchmark: median_ms); a tool "
             "that reports no median shows `-` there (the ExecuTorch Android app reports means only). "
             "`host p50 ms`: this run's check of the same artifact on the host above (the same sha256 where "
             "the file gives one; `other artifact` when it was re-exported since). "
             "Memory marked PSS is the ExecuTorch app's PSS growth over idle, not a peak RSS.", "",
             "| device | target | precision | tool | p50 ms | mean ms | load ms | peak RSS MB | runtime "
             "| host p50 ms |",
             "|---|---|---|---|---:|---:|---:|---:|---|---:|"]
    for d in device_rows:
        lat, host = d.get("latency", {}), d.get("host_check", {})
        memory = _f(d.get("peak_rss_mb"), ".0f")
        if d.get("peak_rss_mb") is None and d.get("pss_delta_mb") is not None:
            memory = f"PSS +{d['pss_delta_mb']:.0f}"
        precision = d.get("precision", "-") + (" (unmatched)" if d.get("match") == "unmatched" else "")
        if host and not host.get("same_artifact", True):
            host_p50 = "other artifact"
        else:
            host_p50 = _f(host.get("p50_ms"), ".2f")
        lines.append("| " + " | ".join(_cell(c) for c in [
            d.get("label", "-"), d.get("target", "-"), precision, d.get("source", "-"),
            _f(lat.get("p50_ms"), ".2f"), _f(lat.get("mean_ms"), ".2f"), _f(d.get("load_ms"), ".1f"), memory,
            _runtime_text(d.get("runtime") or {}), host_p50,
        ]) + " |")
    return lines


RUNTIME_COLORS = {"pytorch": "#7f7f7f", "onnx": "#1f77b4", "openvino": "#9467bd", "tflite": "#ff7f0e",
                  "executorch": "#2ca02c", "coreml": "#d62728"}
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^", "int8u8": "v"}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and metric (higher),
    by increasing latency."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def device_points(device_rows: list[dict[str, Any]], metric: str) -> list[tuple[float, float, str, str]]:
    """(device latency, the host check's metric of the same artifact, target, label) per
    device row that has both; the label says which statistic when it is not the p50."""
    points = []
    for d in device_rows:
        lat, value = device_latency(d), d.get("host_check", {}).get(metric)
        if lat is not None and value is not None and lat[0] > 0:
            text = f"{d.get('label', 'device')} {d.get('precision', '')}"
            text += "" if lat[1] == "p50" else f" ({lat[1]})"
            points.append((lat[0], float(value), d.get("target", ""), text))
    return points


def plot_pareto(path: Path, rows: list[dict[str, Any]], metric: str, label: str,
                machine: str | None = None, devices: list[tuple[float, float, str, str]] | None = None) -> None:
    """Latency (p50, log axis) against the task metric: colour per runtime, marker per
    precision, a legend instead of point labels (they overlap on a 2-core host where
    most artifacts run in 1 to 3 ms), and the Pareto front of the exported artifacts.
    ``devices`` (:func:`device_points`) are drawn as labelled stars: the latency measured
    on a device, at the metric the host check of the same artifact found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    pts = [(r["latency"]["p50_ms"], r["metric"][metric], r["target"], r["precision"])
           for r in rows if r.get("latency") and r.get("metric") and r["latency"].get("p50_ms")]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for x, y, target, precision in pts:
        ax.scatter(x, y, s=46, c=RUNTIME_COLORS.get(target, "black"),
                   marker=PRECISION_MARKERS.get(precision, "x"), edgecolors="black", linewidths=0.4,
                   alpha=0.55 if target == "pytorch" else 0.95, zorder=3)
    for x, y, target, text in devices or []:
        ax.scatter(x, y, s=130, c=RUNTIME_COLORS.get(target, "black"), marker="*", edgecolors="black",
                   linewidths=0.6, zorder=4)
        ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, zorder=5)
    front = pareto_front([(x, y) for x, y, target, _ in pts if target != "pytorch"])
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black",
                linewidth=0.8, linestyle="--", zorder=2)
    if pts or devices:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")  # milliseconds as plain numbers, 1-2-5 steps labelled
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    runtimes = [t for t in RUNTIME_COLORS if any(p[2] == t for p in pts + list(devices or []))]
    precisions = [p for p in PRECISION_MARKERS if any(q[3] == p for q in pts)]
    handles = [Line2D([], [], linestyle="", marker="o", color=RUNTIME_COLORS[t], label=t
                      + (" (reference)" if t == "pytorch" else "")) for t in runtimes]
    handles += [Line2D([], [], linestyle="", marker=PRECISION_MARKERS[p], color="black", markerfacecolor="white",
                       label=p) for p in precisions]
    if devices:
        handles.append(Line2D([], [], linestyle="", marker="*", markersize=10, color="black",
                              markerfacecolor="white", label="measured on a device (labelled)"))
    if len(front) > 1:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8, label="Pareto front (exports)"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_xlabel("latency p50, ms (log scale; batch 1, after warm-up)")
    ax.set_ylabel(f"{label} (validation)")
    ax.set_title(f"latency vs {label} per runtime x precision" + (f"\n{machine}" if machine else ""), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def failed_rows(report: dict[str, Any]) -> list[dict]:
    """Rows that make the check command exit non-zero."""
    return [r for r in report["rows"] if r.get("status") in ("failed", "error")]
