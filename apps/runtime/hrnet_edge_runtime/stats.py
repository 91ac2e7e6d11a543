"""Latency and memory measurement: load time, first inference, then warm-up and timed
iterations, with the percentiles the project's host checks report.

Memory is this process's resident set: ``rss_mb`` now and ``peak_rss_mb`` (Linux:
``VmHWM`` from ``/proc/self/status``; elsewhere ``getrusage``'s ``ru_maxrss``, bytes on
macOS, KiB on Linux/BSD).
"""
from __future__ import annotations

import math
import sys
import time
from itertools import cycle
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hrnet_edge_runtime.errors import UsageError

TRIM = 0.10  # trimmed mean: this share cut from each end


def _proc_status(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float | None:
    """This process's resident memory now, in MiB (None where it cannot be read)."""
    now = _proc_status("VmRSS")
    if now is not None:
        return now
    try:
        import psutil  # optional: macOS and Windows

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - psutil absent or denied
        return None


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB. VmHWM before ru_maxrss: ru_maxrss
    survives exec, so a process started from a large parent would report its peak."""
    peak = _proc_status("VmHWM")
    return peak if peak is not None else _maxrss_mb()


def latency_stats(times_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p95/p99 (linear interpolation), mean, trimmed mean (10 % cut from each
    end), min, max and population std of ``times_ms``, in ms."""
    t = np.sort(np.asarray(times_ms, dtype=np.float64))
    if t.size == 0:
        raise UsageError("no timings to summarize (iterations must be at least 1)")
    cut = int(math.floor(TRIM * t.size))
    trimmed = t[cut:t.size - cut] if t.size - 2 * cut > 0 else t
    p50, p90, p95, p99 = (float(v) for v in np.percentile(t, [50, 90, 95, 99]))
    return {"p50_ms": p50, "p90_ms": p90, "p95_ms": p95, "p99_ms": p99,
            "mean_ms": float(t.mean()), "trimmed_mean_ms": float(trimmed.mean()),
            "min_ms": float(t[0]), "max_ms": float(t[-1]), "std_ms": float(t.std())}


def check_counts(warmup: int, iterations: int) -> None:
    """Raise :class:`UsageError` unless warmup >= 0 and iterations >= 1 (ints)."""
    for name, value, low in (("warmup", warmup, 0), ("iterations", iterations, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")


def measure(open_fn: Callable[[], Any], inputs: Sequence[np.ndarray], warmup: int = 10,
            iterations: int = 100) -> tuple[Any, dict[str, Any]]:
    """Open, run once, warm up, time ``iterations`` runs cycling through ``inputs``.

    Args:
        open_fn: returns an opened adapter (anything with ``run(x)``); its duration is
            the load time.
        inputs: prepared arrays (what ``adapter.run`` takes); timing covers ``run`` only.

    Returns:
        (the adapter, {"rss_before_load_mb", "load_ms", "first_inference_ms",
        "latency": {...percentiles..., "iterations", "warmup"}, "peak_rss_mb"}).
    """
    check_counts(warmup, iterations)
    if not inputs:
        raise UsageError("no inputs to time")
    rss_before = rss_mb()
    t0 = time.perf_counter()
    adapter = open_fn()
    load_ms = (time.perf_counter() - t0) * 1e3
    feed = cycle(inputs)
    t0 = time.perf_counter()
    adapter.run(next(feed))
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        adapter.run(next(feed))
    times = []
    for _ in range(iterations):
        x = next(feed)
        t0 = time.perf_counter()
        adapter.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    latency = latency_stats(times)
    latency.update(iterations=iterations, warmup=warmup)
    return adapter, {"rss_before_load_mb": rss_before, "load_ms": load_ms, "first_inference_ms": first_ms,
                     "latency": latency, "peak_rss_mb": peak_rss_mb()}
