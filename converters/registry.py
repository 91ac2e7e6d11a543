"""The export targets by name. Each lives in its own module, imported lazily."""
from __future__ import annotations

import importlib

from hrnet_edge.errors import unknown_choice
from converters.base import Target

TARGETS: dict[str, str] = {
    "onnx": "converters.onnx:OnnxTarget",
    "openvino": "converters.openvino:OpenVinoTarget",
    "tflite": "converters.tflite:TfliteTarget",
    "executorch": "converters.executorch:ExecuTorchTarget",
    "coreml": "converters.coreml:CoreMLTarget",
}


def get_target(name: str) -> Target:
    """Instantiate the target called ``name``."""
    if name not in TARGETS:
        raise unknown_choice("target", name, TARGETS)
    module, cls = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def target_precisions(name: str) -> tuple[str, ...]:
    return get_target(name).precisions
