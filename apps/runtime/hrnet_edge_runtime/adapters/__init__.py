"""One adapter per runtime, one interface (numpy in, the artifact's raw output out).

>>> from hrnet_edge_runtime import load_artifact, open_adapter, random_input
>>> art = load_artifact("runs/default/exports/openvino-fp32")       # doctest: +SKIP
>>> with open_adapter(art, device="CPU", threads=2) as a:            # doctest: +SKIP
...     y = a.run(random_input(art, seed=0))

The runtime modules are imported when an artifact is opened, never at import time;
only ExecuTorch's adapter imports torch (its Python runtime needs it).
"""
from __future__ import annotations

import importlib

from hrnet_edge_runtime.adapters.base import HINTS, Adapter, OpTimes, check_options
from hrnet_edge_runtime.errors import ArtifactError
from hrnet_edge_runtime.metadata import Artifact, load_artifact

# target -> (module, class)
ADAPTERS = {
    "onnx": ("hrnet_edge_runtime.adapters.ort", "OrtAdapter"),
    "openvino": ("hrnet_edge_runtime.adapters.ov", "OpenVinoAdapter"),
    "tflite": ("hrnet_edge_runtime.adapters.litert", "LiteRtAdapter"),
    "executorch": ("hrnet_edge_runtime.adapters.et", "ExecuTorchAdapter"),
    "coreml": ("hrnet_edge_runtime.adapters.coreml", "CoreMLAdapter"),
}

__all__ = ["ADAPTERS", "HINTS", "Adapter", "OpTimes", "adapter_class", "check_options", "open_adapter"]


def adapter_class(target: str) -> type[Adapter]:
    """The adapter class of ``target`` (``"onnx"``, ``"openvino"``, ...)."""
    if target not in ADAPTERS:
        raise ArtifactError(f"no adapter for target {target!r}; known: {', '.join(ADAPTERS)}")
    module, name = ADAPTERS[target]
    return getattr(importlib.import_module(module), name)


def open_adapter(artifact: Artifact | str, device: str | None = None, threads: int | None = None,
                 hint: str = "latency", profile: bool = False) -> Adapter:
    """Open ``artifact`` (an :class:`Artifact` or its folder) on its runtime.

    Args:
        device: the runtime's device: ``CPU`` (default), ``GPU``, ``NPU``, ``AUTO`` for
            OpenVINO; an execution provider (``CPU``, ``CUDA``, ``TensorrtExecutionProvider``)
            for ONNX Runtime; ``CPU`` for LiteRT and ExecuTorch; ``ALL``/``CPU``/``GPU``/``ANE``
            for Core ML.
        threads: CPU threads (None: the runtime's default).
        hint: ``latency`` or ``throughput`` (OpenVINO's PERFORMANCE_HINT; recorded elsewhere).
        profile: collect per-op times (slower runs; see :meth:`Adapter.profile`).

    Raises:
        ArtifactError, RuntimeUnavailable, UsageError.
    """
    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact)
    check_options(threads, hint)
    return adapter_class(artifact.target)(artifact, device=device, threads=threads, hint=hint, profile=profile)
