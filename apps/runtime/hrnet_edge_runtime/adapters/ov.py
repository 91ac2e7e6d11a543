"""OpenVINO: ``model.xml`` (+ ``model.bin``) compiled for CPU, GPU, NPU or AUTO.

The inference precision is pinned from the artifact's metadata
(``runtime.INFERENCE_PRECISION_HINT``; f32 for fp32/fp16/int8, bf16 for bf16): a CPU
with BF16 units (avx512_bf16, AMX) otherwise runs an fp32 IR in bf16 by default and
the output is not what was exported. What the plugin really chose is read back from
the compiled model, with the convolutions' kernel types from its execution graph.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hrnet_edge_runtime.adapters.base import Adapter, OpTimes
from hrnet_edge_runtime.errors import ArtifactError, RuntimeUnavailable, require

VIRTUAL = ("AUTO", "HETERO", "MULTI", "BATCH")
# the hint per precision, when the metadata does not carry one
PRECISION_HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "int8u8": "f32", "bf16": "bf16"}
_KERNEL_TYPES = {"f32", "bf16", "f16", "i8", "u8"}
_DTYPES = {"f32": "float32", "u8": "uint8", "f16": "float16", "i8": "int8"}


def check_device(device: str, available: list[str]) -> None:
    """Raise :class:`RuntimeUnavailable` unless OpenVINO lists ``device`` (``GPU`` matches
    ``GPU.0``; ``AUTO:GPU,CPU`` needs each device it names; plain ``AUTO`` is always there)."""
    head, _, rest = device.partition(":")
    names = [d for d in rest.split(",") if d] if head.upper() in VIRTUAL else [device]
    listed = {a for a in available} | {a.split(".")[0] for a in available}
    missing = [d for d in names if d not in listed]
    if missing:
        raise RuntimeUnavailable(f"OpenVINO sees no device {missing[0]!r} here; it lists: "
                                 f"{', '.join(available) or 'none'} (plus AUTO)")


def executed_precisions(compiled, layer_type: str = "Convolution") -> dict[str, int] | None:
    """How many ``layer_type`` nodes of a compiled model's execution graph run in each
    precision: what the kernels really do, not what was asked (``{"bf16": 72}`` on a
    CPU with BF16 units under the bf16 hint, ``{"f32": 72}`` on one without). The
    kernel name's type suffix (``brgconv_avx512_f32``, ``..._bf16``, ``..._I8``) is the
    compute type; ``runtimePrecision`` names the weights' type instead (``f16`` for an
    fp16 IR computed in f32), so it is used only when the kernel name carries none.
    None where the plugin exposes no execution graph (GPU/NPU name their rt_info
    differently)."""
    counts: dict[str, int] = {}
    try:
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) != layer_type:
                continue
            suffix = info["primitiveType"].astype(str).rsplit("_", 1)[-1].lower()
            precision = suffix if suffix in _KERNEL_TYPES else info["runtimePrecision"].astype(str)
            counts[precision] = counts.get(precision, 0) + 1
    except Exception:  # noqa: BLE001
        return None
    return counts


class OpenVinoAdapter(Adapter):
    """An IR compiled with ``PERFORMANCE_HINT`` from ``hint``, ``INFERENCE_NUM_THREADS``
    from ``threads`` (CPU only) and the artifact's inference precision hint."""

    runtime = "openvino"
    distribution = "openvino"
    extra = "openvino"
    modules = ("openvino",)

    def _open(self) -> None:
        ov = require("openvino", self.extra)
        self._ov = ov
        self.device = self.device or "CPU"
        self.core = ov.Core()
        self.available_devices = list(self.core.available_devices)
        check_device(self.device, self.available_devices)
        try:
            model = self.core.read_model(str(self.artifact.model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError for a bad .xml / .bin
            raise ArtifactError(f"{self.artifact.model_path}: OpenVINO cannot read it ({exc})") from exc
        got = model.inputs[0].get_element_type().get_type_name()
        if _DTYPES.get(got, got) != self.input_spec.dtype:
            raise ArtifactError(f"{self.artifact.model_path}: the model's input is {got}, "
                                f"metadata.json says {self.input_spec.dtype}")
        self.config = self._config()
        try:
            self.compiled = self.core.compile_model(model, self.device, self.config)
        except Exception as exc:
            raise RuntimeUnavailable(f"OpenVINO could not compile the model for {self.device} "
                                     f"with {self.config}: {exc}") from exc
        self._request = self.compiled.create_infer_request()

    def _config(self) -> dict[str, Any]:
        runtime = self.artifact.meta.get("runtime") or {}
        precision = runtime.get("INFERENCE_PRECISION_HINT") or PRECISION_HINTS[self.artifact.precision]
        self.precision_hint = precision
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.hint.upper()}
        supported = self._supported(self.device)
        # a virtual device (AUTO) passes these on to the device it picks
        if supported is None or "INFERENCE_PRECISION_HINT" in supported:
            config["INFERENCE_PRECISION_HINT"] = precision
        if self.threads and (supported is None or "INFERENCE_NUM_THREADS" in supported):
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.profiling:
            config["PERF_COUNT"] = True
        return config

    def _supported(self, device: str) -> set[str] | None:
        if device.partition(":")[0].upper() in VIRTUAL:
            return None
        try:
            return set(self.core.get_property(device, "SUPPORTED_PROPERTIES"))
        except Exception:  # noqa: BLE001 - a plugin that cannot say: pass everything
            return None

    def _run(self, x: np.ndarray) -> np.ndarray:
        self._request.infer({0: x})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def _get(self, key: str, device: str | None = None):
        try:
            value = self.core.get_property(device, key) if device else self.compiled.get_property(key)
        except Exception:  # noqa: BLE001 - not every plugin reports every property
            return None
        if hasattr(value, "get_type_name"):
            return value.get_type_name()
        if hasattr(value, "name") and not isinstance(value, str):  # a pybind enum, e.g. PerformanceMode
            return str(value.name)
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return value if isinstance(value, (int, float, bool)) or value is None else str(value)

    def _info(self) -> dict[str, Any]:
        plain = self.device.partition(":")[0]
        info = {
            "available_devices": self.available_devices,
            "full_device_name": self._get("FULL_DEVICE_NAME", plain) if plain.upper() not in VIRTUAL else None,
            "execution_devices": self._get("EXECUTION_DEVICES"),
            "config": {k: (str(v) if not isinstance(v, (int, bool)) else v) for k, v in self.config.items()},
            "performance_hint": self._get("PERFORMANCE_HINT"),
            "inference_precision_hint": self.precision_hint,
            "inference_precision": self._get("INFERENCE_PRECISION_HINT"),
            "inference_num_threads": self._get("INFERENCE_NUM_THREADS"),
            "num_streams": self._get("NUM_STREAMS"),
        }
        if plain == "CPU":
            info["optimization_capabilities"] = self._get("OPTIMIZATION_CAPABILITIES", "CPU")
        info["convolutions"] = self.executed_precisions()
        return info

    def executed_precisions(self, layer_type: str = "Convolution") -> dict[str, int] | None:
        """See :func:`executed_precisions`."""
        return executed_precisions(self.compiled, layer_type)

    def _profile(self, x: np.ndarray, iterations: int) -> dict[str, Any]:
        self._run(x)  # warm-up, not counted
        times, skipped = OpTimes(), set()
        for _ in range(iterations):
            self._run(x)
            for p in self._request.get_profiling_info():
                if p.status != p.Status.EXECUTED:
                    skipped.add(p.node_name)
                    continue
                times.add(p.node_name, p.node_type, p.real_time.total_seconds() * 1e3, p.exec_type)
        return times.summary(self.runtime, "OpenVINO PERF_COUNT (InferRequest.get_profiling_info)",
                             iterations, not_executed=len(skipped - set(times.ops)),
                             note="nodes of the compiled graph (fused); exec_type is the kernel "
                                  "and its compute type")

    def close(self) -> None:
        self._request = None
        self.compiled = None
