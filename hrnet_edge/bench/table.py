"""The benchmark's derived figures, its markdown table and its plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hrnet_edge.io import write_json, write_text

_RAN = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def peak_kind(row: dict) -> str:
    """Which GEMM peak a row is measured against: the precision that ran."""
    if row["precision"] == "int8":
        return "int8"
    ran = _RAN.get(str(row.get("ran", "")), row["precision"])
    return "bf16" if ran == "bf16" else "fp32"


def _effective(row: dict) -> str:
    """The precision a row computes in (OpenVINO's 'default' is what the plugin chose)."""
    if row["precision"] == "default":
        return _RAN.get(str(row.get("ran", "")), "fp32")
    return row["precision"]


def derive(rows: list[dict], peaks: dict, gflop: float) -> list[dict]:
    """Add GFLOP/s, % of peak and the ratios to every row that ran."""
    ok = [r for r in rows if "p50_ms" in r]
    eager = next((r["p50_ms"] for r in ok if r["runtime"] == "pytorch"), None)
    for r in ok:
        r["gflops_per_s"] = round(gflop / (r["p50_ms"] / 1e3), 1)
        kind = peak_kind(r)
        peak = (peaks.get(kind) or {}).get("gflops")
        r["peak_kind"] = kind
        r["pct_of_peak"] = round(100 * r["gflops_per_s"] / peak, 1) if peak else None
        r["speedup_vs_eager"] = round(eager / r["p50_ms"], 2) if eager else None
        if r["precision"] == "int8":
            base = next((b for b in ok if b["runtime"] == r["runtime"] and b["source"] == r["source"]
                         and b.get("form") == r.get("form") and b["precision"] in ("fp32", "default")), None)
            if base is not None:
                r["int8_speedup_vs_fp32"] = round(base["p50_ms"] / r["p50_ms"], 2)
                r["int8_speedup_base"] = f"{base['runtime']} {base['precision']} ({base['source']})"
        if r["source"].startswith("project"):
            hand = next((b for b in ok if b["runtime"] == r["runtime"] and b["source"] == "by hand"
                         and _effective(b) == _effective(r)), None)
            if hand is not None:
                r["speedup_vs_by_hand"] = round(hand["p50_ms"] / r["p50_ms"], 2)
    return rows


_ORDER = {"runtime": ("pytorch", "onnxruntime", "openvino", "litert", "executorch"),
          "precision": ("fp32", "default", "fp16", "bf16", "int8"),
          "source": ("eager", "project", "project, one partition", "by hand")}


def ordered(rows: list[dict]) -> list[dict]:
    """Rows grouped by runtime, then precision, then source (project before by-hand)."""
    def key(r):
        return tuple(_ORDER[k].index(r[k]) if r[k] in _ORDER[k] else 99 for k in ("runtime", "precision", "source"))
    return sorted(rows, key=key)


def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def markdown(result: dict) -> str:
    cpu, peaks = result["cpu"], result["peaks"]
    lines = [
        f"# Benchmark: {result['model']} {result['input_size'][0]}x{result['input_size'][1]}",
        "",
        f"CPU: **{cpu['name']}** ({cpu['logical_cpus']} logical CPUs, {', '.join(cpu['features']) or 'no AVX2'}); "
        f"{result['threads']} threads, batch 1, p50/p90 of {result['iterations']} runs per row, timed in "
        f"{result.get('rounds', 1)} interleaved rounds after {result['warmup']} warm-ups; model {result['gflop']:.3f} GFLOP per image ({result['macs'] / 1e9:.3f} GMAC).",
        "",
        "GEMM peak measured here: " + "; ".join(
            f"{k} {v['gflops']} {v.get('unit', 'GFLOP/s')}" + (f" ({v['note']})" if v.get("note") else "")
            for k, v in peaks.items()) + ".",
        "",
        "| runtime | precision (ran) | source | p50 ms | p90 ms | GFLOP/s | % of peak | x eager "
        "| INT8 x FP32 | x by-hand | partitions |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ordered(result["rows"]):
        prec = r["precision"] + (f" ({r['ran']})" if r.get("ran") else "")
        src = r["source"]
        if "error" in r:
            lines.append(f"| {r['runtime']} | {prec} | {src} | failed: {r['error'].replace('|', '/')} "
                         "| | | | | | | |")
            continue
        pct = f"{_f(r.get('pct_of_peak'), '{:.1f}')} of {r['peak_kind']}" if r.get("pct_of_peak") is not None else "-"
        lines.append(
            f"| {r['runtime']} | {prec} | {src} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{_f(r.get('gflops_per_s'), '{:.1f}')} | {pct} | {_f(r.get('speedup_vs_eager'))} | "
            f"{_f(r.get('int8_speedup_vs_fp32'))} | {_f(r.get('speedup_vs_by_hand'))} | "
            f"{_f(r.get('partitions'), '{}')} |")
    lines += ["", "How each row was built:", ""]
    seen = set()
    for r in result["rows"]:
        key = (r["runtime"], r["precision"], r["source"])
        if r.get("how") and key not in seen:
            seen.add(key)
            lines.append(f"- {r['runtime']} {r['precision']} ({r['source']}): {r['how']}")
    profiled = [r for r in ordered(result["rows"]) if r.get("profile", {}).get("ops")]
    if profiled:
        lines += ["", "Where the time goes (the runtimes' own per-op profilers, summed over "
                  f"{profiled[0]['profile']['runs']} inferences; profiling adds overhead, read the shares):", ""]
        for r in profiled:
            prof = r["profile"]
            ops = "; ".join(f"{o['op']} {100 * o['share']:.0f} % ({o['ms']:.2f} ms)" for o in prof["ops"])
            lines.append(f"- {r['runtime']} {r['precision']} ({r['source']}), "
                         f"{prof['profiled_ms_per_inference']:.2f} ms profiled: {ops}")
    lines += ["", "x eager: PyTorch eager p50 / row p50. INT8 x FP32: the same runtime and source's fp32 "
              "(OpenVINO by hand: its default) p50 / int8 p50. x by-hand: the by-hand row of the same runtime "
              "and computed precision, p50 / project p50. % of peak: GFLOP/s over the GEMM peak of the "
              "precision that ran (int8 rows: the int8 GEMM's GOP/s).", ""]
    return "\n".join(lines)


COLOURS = {"pytorch": "#555555", "onnxruntime": "#1f77b4", "openvino": "#9467bd",
           "litert": "#ff7f0e", "executorch": "#2ca02c"}


def plot(result: dict, path: Path) -> Path | None:
    """Speed-up over PyTorch eager per row: colour per runtime, hatched for by-hand,
    the CPU in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [r for r in ordered(result["rows"]) if r.get("speedup_vs_eager") is not None]
    if not rows:
        return None
    labels = [f"{r['runtime']} {r['precision']}{' (' + r['ran'] + ')' if r.get('ran') else ''} - {r['source']}"
              for r in rows]
    vals = [r["speedup_vs_eager"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.6))
    y = range(len(rows))[::-1]
    bars = ax.barh(list(y), vals, color=[COLOURS.get(r["runtime"], "#888") for r in rows],
                   hatch=None, edgecolor="black", linewidth=0.4)
    for bar, r in zip(bars, rows):
        if r["source"] == "by hand":
            bar.set_hatch("///")
            bar.set_alpha(0.6)
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['speedup_vs_eager']:.1f}x "
                f"({r['p50_ms']:.2f} ms)", va="center", fontsize=7)
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speed-up over PyTorch eager (p50, batch 1)")
    ax.set_xlim(0, max(vals) * 1.25)
    ax.set_title(f"{result['model']} {result['input_size'][0]}x{result['input_size'][1]}, "
                 f"{result['threads']} threads\n{result['cpu']['name']}", fontsize=9)
    handles = [Patch(color=c, label=k) for k, c in COLOURS.items() if any(r["runtime"] == k for r in rows)]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="by hand"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "bench.json", result)
    write_text(out_dir / "bench.md", markdown(result))
    plot(result, out_dir / "bench.png")
