"""ONNX Runtime: ``model.onnx`` in an InferenceSession on the execution provider the
device names (CPU by default)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hrnet_edge_runtime.adapters.base import Adapter, OpTimes
from hrnet_edge_runtime.errors import ArtifactError, RuntimeUnavailable, require

# short device names -> execution providers; a full provider name is accepted as well
PROVIDERS = {
    "CPU": "CPUExecutionProvider", "CUDA": "CUDAExecutionProvider", "GPU": "CUDAExecutionProvider",
    "TENSORRT": "TensorrtExecutionProvider", "ROCM": "ROCMExecutionProvider",
    "DML": "DmlExecutionProvider", "COREML": "CoreMLExecutionProvider",
    "OPENVINO": "OpenVINOExecutionProvider", "QNN": "QNNExecutionProvider",
    "XNNPACK": "XnnpackExecutionProvider", "NNAPI": "NnapiExecutionProvider",
}
_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
           "tensor(int8)": "int8"}


def provider_for(device: str, available: list[str]) -> str:
    """The execution provider ``device`` names, if this onnxruntime build has it.

    Raises:
        RuntimeUnavailable: naming the providers (and short names) that are available.
    """
    wanted = device if device.endswith("ExecutionProvider") else PROVIDERS.get(device.upper())
    if wanted in available:
        return wanted
    short = {v: k for k, v in PROVIDERS.items() if k != "GPU"}
    listed = ", ".join(f"{short[p]} ({p})" if p in short else p for p in available)
    raise RuntimeUnavailable(f"onnxruntime has no device {device!r} here; it lists: {listed} "
                             "(GPU builds are other wheels, e.g. onnxruntime-gpu)")


class OrtAdapter(Adapter):
    """ONNX Runtime, one session, sequential execution, ``threads`` intra-op threads
    (None: onnxruntime's default, one per physical core)."""

    runtime = "onnxruntime"
    distribution = "onnxruntime"
    extra = "onnxruntime"
    modules = ("onnxruntime",)

    def _open(self) -> None:
        ort = require("onnxruntime", self.extra)
        self._ort = ort
        self.device = self.device or "CPU"
        self.available_providers = list(ort.get_available_providers())
        provider = provider_for(self.device, self.available_providers)
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1  # one sequential graph: a second pool only adds noise
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self._profile_dir = None
        if self.profiling:
            self._profile_dir = tempfile.mkdtemp(prefix="hrnet-edge-ort-profile-")
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(self._profile_dir) / "ort")
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.artifact.model_path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise ArtifactError(f"{self.artifact.model_path}: onnxruntime cannot load it "
                                f"({type(exc).__name__}: {exc})") from exc
        first = self.session.get_inputs()[0]
        self._name = first.name
        got = _DTYPES.get(first.type, first.type)
        if got != self.input_spec.dtype:
            raise ArtifactError(f"{self.artifact.model_path}: the model's input is {got}, "
                                f"metadata.json says {self.input_spec.dtype}")

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._name: x})[0]

    def _info(self) -> dict[str, Any]:
        opts = self.session.get_session_options()
        return {"available_providers": self.available_providers,
                "providers": list(self.session.get_providers()),
                "intra_op_num_threads": int(opts.intra_op_num_threads),
                "threads_note": None if self.threads else "0 = onnxruntime's default (one per physical core)",
                "graph_optimization_level": "ORT_ENABLE_ALL"}

    def _profile(self, x: np.ndarray, iterations: int) -> dict[str, Any]:
        # The profiler records every run since the session opened; keep the last
        # ``iterations`` runs only (after one more warm-up run).
        for _ in range(iterations + 1):
            self._run(x)
        path = self.session.end_profiling()
        try:
            events = json.loads(Path(path).read_text())
        finally:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
        runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-iterations:]
        spans = [(r["ts"], r["ts"] + r["dur"]) for r in runs]
        times = OpTimes()
        for e in events:
            if e.get("cat") != "Node" or not any(a <= e.get("ts", -1) <= b for a, b in spans):
                continue
            args = e.get("args", {})
            name = e["name"][: -len("_kernel_time")] if e["name"].endswith("_kernel_time") else e["name"]
            times.add(name, str(args.get("op_name", "?")), e.get("dur", 0) / 1000.0, args.get("provider"))
        return times.summary(self.runtime, "onnxruntime session profiling (SessionOptions.enable_profiling)",
                             len(spans), note="op types after onnxruntime's graph optimizations "
                                              "(e.g. Conv+Relu fused, QLinearConv)")

    def close(self) -> None:
        self.session = None
