"""Core ML: ``model.mlpackage`` through coremltools' ``MLModel.predict`` (macOS only).

coremltools ships its prediction library (libcoremlpython) for macOS only, so on any
other OS this adapter raises :class:`RuntimeUnavailable` before importing anything.
The macOS path is written from coremltools' documented API and the project's own
Core ML runner; it has not been run on this project's Linux hosts.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from hrnet_edge_runtime.adapters.base import Adapter
from hrnet_edge_runtime.errors import ArtifactError, RuntimeUnavailable, choice, require

# --device -> coremltools.ComputeUnit
COMPUTE_UNITS = {"ALL": "ALL", "CPU": "CPU_ONLY", "GPU": "CPU_AND_GPU", "ANE": "CPU_AND_NE", "NPU": "CPU_AND_NE"}
PROFILE_REASON = ("coremltools' predict has no per-op profiler: use Xcode's Core ML performance report "
                  "or Instruments' Core ML template on the Mac")


def _need_macos() -> None:
    if sys.platform != "darwin":
        raise RuntimeUnavailable(
            f"Core ML needs macOS: MLModel.predict runs only there (coremltools ships libcoremlpython "
            f"for macOS only) and this host is {sys.platform}; copy the artifact folder to a Mac and "
            'pip install "hrnet-edge-runtime[coreml]"')


class CoreMLAdapter(Adapter):
    """``MLModel(path, compute_units=...)``: an image input is fed as a Pillow RGB picture
    made from the uint8 NHWC array; the output comes back as float32."""

    runtime = "coreml"
    distribution = "coremltools"
    extra = "coreml"
    modules = ("coremltools",)

    @classmethod
    def import_runtime(cls) -> float:
        _need_macos()
        return super().import_runtime()

    def _open(self) -> None:
        _need_macos()
        ct = require("coremltools", self.extra)
        self.device = (self.device or "ALL").upper()
        if self.device not in COMPUTE_UNITS:
            raise choice("Core ML device", self.device, COMPUTE_UNITS)
        self.compute_units = COMPUTE_UNITS[self.device]
        try:
            self.model = ct.models.MLModel(str(self.artifact.model_path),
                                           compute_units=getattr(ct.ComputeUnit, self.compute_units))
        except Exception as exc:  # coremltools raises plain Exceptions for a bad package
            raise ArtifactError(f"{self.artifact.model_path}: Core ML cannot load it ({exc})") from exc
        self._out = self.artifact.output["name"]

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.input_spec.image:
            from PIL import Image

            feed = Image.fromarray(x[0], "RGB")
        else:
            feed = x
        out = self.model.predict({self.input_spec.name: feed})[self._out]
        return np.asarray(out, dtype=np.float32)

    def _info(self) -> dict[str, Any]:
        return {"compute_units": self.compute_units,
                "threads_note": "Core ML picks its own threads; --threads is not applied"}

    def profile(self, x=None, iterations=10):
        return {"available": False, "reason": PROFILE_REASON}
