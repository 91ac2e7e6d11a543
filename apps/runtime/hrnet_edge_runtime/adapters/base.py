"""The interface every runtime adapter implements: numpy in, the raw output out.

An adapter opens one artifact on one runtime and device. ``run`` takes exactly the
array ``input_spec`` describes (what :mod:`hrnet_edge_runtime.inputs` builds from a
picture) and returns the artifact's output as the artifact gives it (TFLite: NHWC),
as float32. ``info`` says what ran; ``profile`` gives per-op times where the runtime
can measure them, else ``{"available": False, "reason": ...}``.
"""
from __future__ import annotations

import abc
import importlib.metadata as _md
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from hrnet_edge_runtime.errors import UsageError, choice, require
from hrnet_edge_runtime.metadata import Artifact, InputSpec

HINTS = ("latency", "throughput")
PROFILE_ITERATIONS = 10


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (no import), or None."""
    try:
        return _md.version(name)
    except _md.PackageNotFoundError:
        return None


def check_options(threads: int | None, hint: str) -> None:
    """Raise :class:`UsageError` for a thread count below 1 or an unknown hint."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    if hint not in HINTS:
        raise choice("performance hint", hint, HINTS)


class Adapter(abc.ABC):
    """One artifact opened on one runtime.

    Class attributes:
        runtime: the runtime's name in results (``"onnxruntime"``, ``"openvino"``, ...).
        distribution: the pip distribution whose version ``info`` reports.
        extra: the hrnet-edge-runtime extra that installs it.
    """

    runtime: str = ""
    distribution: str = ""
    extra: str = ""
    modules: tuple[str, ...] = ()  # what opening an artifact imports

    @classmethod
    def import_runtime(cls) -> float:
        """Import the runtime's modules now (RuntimeUnavailable naming the extra if one
        is missing); returns the milliseconds it took, so a load time can leave it out."""
        t0 = time.perf_counter()
        for module in cls.modules:
            require(module, cls.extra)
        return (time.perf_counter() - t0) * 1e3

    def __init__(self, artifact: Artifact, device: str | None = None, threads: int | None = None,
                 hint: str = "latency", profile: bool = False):
        check_options(threads, hint)
        self.artifact = artifact
        self.device = device
        self.threads = threads
        self.hint = hint
        self.profiling = bool(profile)
        self.input_spec: InputSpec = artifact.input
        self._last: np.ndarray | None = None
        self._profile_result: dict[str, Any] | None = None
        self._open()

    # --- what each runtime implements -------------------------------------------------
    @abc.abstractmethod
    def _open(self) -> None:
        """Load the artifact; raise RuntimeUnavailable / ArtifactError as fitting."""

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run one checked input; the first output as the runtime returns it."""

    def _info(self) -> dict[str, Any]:
        return {}

    def _profile(self, x: np.ndarray, iterations: int) -> dict[str, Any]:
        return {"available": False, "reason": f"{self.runtime}: no per-op profiler in this adapter"}

    # --- the public interface ----------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one input of ``input_spec``'s shape and dtype; the raw output, float32.

        Raises:
            UsageError: ``x`` has another shape or dtype.
        """
        x = self.check_input(x)
        self._last = x
        return np.asarray(self._run(x), dtype=np.float32)

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a contiguous array of the spec, or a UsageError saying what differs."""
        spec = self.input_spec
        x = np.asarray(x)
        if x.dtype != np.dtype(spec.dtype) or tuple(x.shape) != tuple(spec.shape):
            raise UsageError(f"{self.runtime}: input {spec.name!r} takes {spec.dtype} {list(spec.shape)} "
                             f"({spec.layout}), got {x.dtype} {list(x.shape)}")
        return np.ascontiguousarray(x)

    def info(self) -> dict[str, Any]:
        """The runtime, its version, the device and threads used, and what the runtime
        reports it really did (JSON types only)."""
        base = {"name": self.runtime, "version": dist_version(self.distribution), "extra": self.extra,
                "device": self.device, "threads": self.threads,
                "input": self.input_spec.as_dict(),
                "output": {k: self.artifact.output.get(k) for k in ("name", "shape", "layout", "dtype")}}
        base.update(self._info())
        return base

    def profile(self, x: np.ndarray | None = None, iterations: int = PROFILE_ITERATIONS) -> dict[str, Any]:
        """Per-op times over ``iterations`` runs of ``x`` (default: the last input run,
        else seeded random pixels), or ``{"available": False, "reason": ...}``.

        The adapter must have been opened with ``profile=True``; profiling slows the
        runs down, so time latency on an adapter opened without it.
        """
        if self._profile_result is not None:
            return self._profile_result
        if not self.profiling:
            return {"available": False, "reason": "the adapter was opened without profile=True"}
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise UsageError(f"profile iterations must be a positive integer, got {iterations!r}")
        if x is None:
            from hrnet_edge_runtime.inputs import random_input

            x = self._last if self._last is not None else random_input(self.artifact, seed=0)
        self._profile_result = self._profile(self.check_input(x), iterations)
        return self._profile_result

    def close(self) -> None:
        """Drop the runtime objects (the adapter cannot run afterwards)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OpTimes:
    """Collects per-op times (milliseconds) over several runs and summarizes them."""

    def __init__(self) -> None:
        self.ops: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, name: str, op_type: str, ms: float, exec_type: str | None = None) -> None:
        rec = self.ops.setdefault(name, {"name": name, "op_type": op_type, "exec_type": exec_type,
                                         "calls": 0, "total_ms": 0.0})
        rec["calls"] += 1
        rec["total_ms"] += float(ms)

    def summary(self, runtime: str, source: str, runs: int, **extra: Any) -> dict[str, Any]:
        """``{"available": True, "ops": [...], "by_op_type": {...}, ...}``: ops in
        execution order with calls, total and mean ms per run; op types by share."""
        ops = []
        for rec in self.ops.values():
            ops.append({**rec, "total_ms": round(rec["total_ms"], 6),
                        "mean_ms": round(rec["total_ms"] / max(runs, 1), 6)})
        per_run = sum(r["total_ms"] for r in self.ops.values()) / max(runs, 1)
        by_type: dict[str, dict[str, Any]] = {}
        for rec in ops:
            t = by_type.setdefault(rec["op_type"], {"ops": 0, "mean_ms": 0.0})
            t["ops"] += 1
            t["mean_ms"] += rec["mean_ms"]
        for t in by_type.values():
            t["mean_ms"] = round(t["mean_ms"], 6)
            t["share"] = round(t["mean_ms"] / per_run, 4) if per_run > 0 else 0.0
        by_type = dict(sorted(by_type.items(), key=lambda kv: -kv[1]["mean_ms"]))
        return {"available": True, "runtime": runtime, "source": source, "iterations": runs,
                "unit": "ms", "op_time_per_run_ms": round(per_run, 6), "op_count": len(ops),
                "by_op_type": by_type, "ops": ops, **extra}
