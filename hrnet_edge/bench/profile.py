"""Where an artifact's time goes: per-op-type profiles from the runtimes' own profilers.

ONNX Runtime writes a Chrome trace (``SessionOptions.enable_profiling``) with one
``Node`` event per kernel run; OpenVINO reports each executed layer after an inference
(``PERF_COUNT`` and ``InferRequest.get_profiling_info``). Both are summed over ``runs``
inferences and grouped by op type (with OpenVINO's kernel name, whose suffix is the
precision that ran). Profiling adds overhead, so shares are what to read, not totals.
LiteRT's and ExecuTorch's Python runtimes offer no per-op profile.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _summary(times_us: dict[str, float], runs: int, top: int) -> dict[str, Any]:
    total = sum(times_us.values())
    ops = sorted(times_us.items(), key=lambda kv: -kv[1])
    rows = [{"op": k, "ms": round(v / runs / 1e3, 3), "share": round(v / total, 3) if total else 0.0}
            for k, v in ops[:top]]
    rest = sum(v for _, v in ops[top:])
    if rest:
        rows.append({"op": f"({len(ops) - top} other op types)", "ms": round(rest / runs / 1e3, 3),
                     "share": round(rest / total, 3)})
    return {"runs": runs, "profiled_ms_per_inference": round(total / runs / 1e3, 3), "ops": rows}


def onnxruntime_profile(path: Path, x: np.ndarray, threads: int, runs: int = 20, top: int = 8) -> dict[str, Any]:
    """Per op type (``QLinearConv``, ``Conv``, ``Add`` ...) time of an ONNX model."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(3):  # warm-up runs are profiled too: they are left out below
            sess.run(None, {name: x})
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    cutoff = runs_seen[3]["ts"] if len(runs_seen) > 3 else 0
    times: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e.get("ts", 0) >= cutoff:
            times[e.get("args", {}).get("op_name", "?")] += float(e.get("dur", 0))
    return {"profiler": "onnxruntime enable_profiling", **_summary(times, runs, top)}


def openvino_profile(xml_path: Path, x: np.ndarray, threads: int, hint: str = "f32", runs: int = 20,
                     top: int = 8) -> dict[str, Any]:
    """Per layer type and kernel (``Convolution brgconv_avx512_I8`` ...) time of an IR."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml_path)), "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: x})
    times: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                times[f"{info.node_type} {info.exec_type}"] += info.real_time.total_seconds() * 1e6
    return {"profiler": "openvino PERF_COUNT", **_summary(times, runs, top)}
