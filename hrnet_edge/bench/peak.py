"""This machine's compute peak, measured with torch's GEMMs (oneDNN / MKL kernels).

A model's GFLOP/s means little without the machine's: the benchmark divides each row
by the peak of the precision it ran (FP32 GEMM for fp32 rows, BF16 GEMM for bf16,
INT8 GEMM for int8) and prints the share. The peaks are measured, not looked up.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16", "amx_int8")


def cpu_facts() -> dict[str, Any]:
    """The CPU's name, core count and the SIMD features that decide int8/bf16 speed."""
    import os
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"name": name, "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "features": [f for f in CPU_FEATURES if f in flags]}


def _best_rate(fn, flop: float, seconds: float = 1.5, min_reps: int = 3) -> float:
    """Best observed FLOP/s of ``fn`` (one warm-up, then repeats for ~``seconds``)."""
    fn()
    best, spent, reps = float("inf"), 0.0, 0
    while reps < min_reps or spent < seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
        if reps >= 50:
            break
    return flop / best / 1e9


def measure_peaks(threads: int, size: int = 2048) -> dict[str, dict[str, Any]]:
    """GEMM throughput (GFLOP/s; GOP/s for int8) of an ``size`` x ``size`` product.

    Returns ``{"fp32": {...}, "bf16": {...}, "int8": {...}}``, each with ``gflops``,
    ``kernel`` and, where the CPU lacks the units, a ``note`` that the figure is an
    emulation (it is still what this machine does with that precision).
    """
    import torch

    torch.set_num_threads(threads)
    feats = set(cpu_facts()["features"])
    n = int(size)
    flop = 2.0 * n ** 3
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        out["fp32"] = {"gflops": _best_rate(lambda: torch.mm(a, b), flop), "kernel": "torch.mm float32"}
        a16, b16 = a.bfloat16(), b.bfloat16()
        bf16 = {"gflops": _best_rate(lambda: torch.mm(a16, b16), flop), "kernel": "torch.mm bfloat16"}
        if not feats & {"avx512_bf16", "amx_bf16"}:
            bf16["note"] = "no BF16 units (avx512_bf16/AMX): emulated"
        out["bf16"] = bf16
        ai = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
        bi = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
        try:
            i8 = {"gflops": _best_rate(lambda: torch._int_mm(ai, bi), flop), "kernel": "torch._int_mm int8 -> int32",
                  "unit": "GOP/s"}
            if not feats & {"avx512_vnni", "avx_vnni", "amx_int8"}:
                i8["note"] = "no VNNI/AMX-INT8 units"
        except (RuntimeError, AttributeError) as exc:  # a torch build without the CPU kernel
            i8 = {"gflops": None, "kernel": "torch._int_mm", "note": f"unavailable: {exc}"}
        out["int8"] = i8
    for v in out.values():
        if v.get("gflops") is not None:
            v["gflops"] = round(float(v["gflops"]), 1)
    return out
