"""LiteRT (TFLite): ``model.tflite`` in ``ai_edge_litert.interpreter.Interpreter`` on
the CPU (the XNNPACK delegate is applied by default).

Input and output are NHWC as the artifact has them. A model whose I/O tensors are
quantized (int8/uint8 with a scale) is fed by quantizing the float input with the
tensor's scale and zero point, and its output is dequantized the same way; an
``int8u8`` artifact takes the RGB bytes as they are (its input scale is 1/255).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hrnet_edge_runtime.adapters.base import Adapter
from hrnet_edge_runtime.errors import ArtifactError, RuntimeUnavailable, require

PROFILE_REASON = ("LiteRT's Python interpreter has no per-op profiler. Per-op times come from "
                  "TensorFlow Lite's benchmark_model binary (--graph=model.tflite --num_threads=N "
                  "--enable_op_profiling=true); ai-edge-litert's litert-benchmark "
                  "(--model model.tflite --num_threads N --result_json r.json) gives whole-model times")


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float ``x`` as the integer tensor ``detail`` describes: round(x / scale) + zero_point,
    clipped to the dtype's range."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An integer output tensor as float32: (q - zero_point) * scale (float tensors as they are)."""
    scale, zero = detail["quantization"]
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer) or not scale:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero) * np.float32(scale)).astype(np.float32)


class LiteRtAdapter(Adapter):
    """The LiteRT interpreter with ``threads`` threads (None: LiteRT's default)."""

    runtime = "litert"
    distribution = "ai-edge-litert"
    extra = "litert"
    modules = ("ai_edge_litert.interpreter",)

    def _open(self) -> None:
        self.device = self.device or "CPU"
        if self.device.upper() != "CPU":
            raise RuntimeUnavailable(
                f"the LiteRT interpreter here runs on CPU only (XNNPACK), not {self.device!r}; it lists: CPU. "
                "GPU/NPU need LiteRT's CompiledModel API with the vendor's accelerator: "
                "try litert-benchmark --use_gpu / --use_npu")
        litert = require("ai_edge_litert.interpreter", self.extra)
        try:
            self.interpreter = litert.Interpreter(model_path=str(self.artifact.model_path),
                                                  num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{self.artifact.model_path}: LiteRT cannot load it ({exc})") from exc
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        tensor = np.dtype(self.input["dtype"])
        fed = np.dtype(self.input_spec.dtype)
        scale = self.input["quantization"][0]
        if tensor == fed:
            self._quantize_input = False
        elif fed == np.float32 and np.issubdtype(tensor, np.integer) and scale > 0:
            self._quantize_input = True
        else:
            raise ArtifactError(f"{self.artifact.model_path}: the model's input is {tensor}"
                                f"{' (scale %g)' % scale if scale else ''}, metadata.json says {fed}")

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._quantize_input:
            x = quantize(x, self.input)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)

    def _info(self) -> dict[str, Any]:
        def q(detail):
            scale, zero = detail["quantization"]
            return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}

        return {"delegate": "XNNPACK (LiteRT's default CPU delegate)",
                "threads_note": None if self.threads else "LiteRT's default thread count",
                "input_tensor": q(self.input), "output_tensor": q(self.output),
                "input_quantized_by_adapter": self._quantize_input,
                "output_dequantized_by_adapter": bool(np.issubdtype(np.dtype(self.output["dtype"]), np.integer)
                                                      and self.output["quantization"][0])}

    def _profile(self, x: np.ndarray, iterations: int) -> dict[str, Any]:
        return {"available": False, "reason": PROFILE_REASON}

    def profile(self, x=None, iterations=10):  # no profiler: say so even without profile=True
        return {"available": False, "reason": PROFILE_REASON}

    def close(self) -> None:
        self.interpreter = None
