"""The interface every export target implements.

A target turns a PyTorch model into an artifact folder
``<run>/exports/<target>-<precision>/`` holding ``model.<ext>`` and
``metadata.json``, and can load that artifact back into a :class:`Runner` that takes
the same input as the PyTorch model (NCHW float32 RGB in 0..1) and returns the same
output layout (NCHW for pose heatmaps), whatever the artifact uses inside (e.g. NHWC
for TFLite). A target never calls another target: when one needs another's product
(TFLite needs the ONNX file), the pipeline hands it over in :class:`ExportJob`.
"""
from __future__ import annotations

import abc
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hrnet_edge.errors import DataError

if TYPE_CHECKING:  # torch is only needed to export, not to run an artifact
    from torch import nn

# Precisions a target may offer. "int8" always means activations and weights in INT8
# unless the target's metadata says otherwise (Core ML: weight-only). "int8u8" is the
# same INT8 model taking what apps hold: uint8 RGB NHWC (0..255), the division by 255
# and the normalization inside the graph. It is exported only when asked for.
UINT8_INPUT = "int8u8"
PRECISIONS = ("fp32", "fp16", "bf16", "int8", UINT8_INPUT)
# the runners' input forms: the PyTorch contract, or uint8 RGB NHWC
FLOAT_NCHW, UINT8_NHWC = "float32 NCHW 0..1", "uint8 NHWC 0..255"


def quantized_as(precision: str) -> str:
    """The precision whose model and thresholds ``precision`` uses ("int8u8": "int8")."""
    return "int8" if precision == UINT8_INPUT else precision


def uint8_input_spec(base: dict[str, Any]) -> dict[str, Any]:
    """The ``input`` metadata of a uint8-input artifact, from the float model's ``base``."""
    n, _c, h, w = base["shape"]
    norm = dict(base.get("normalization") or {})
    norm.update(in_graph=True, recipe="feed the RGB bytes as they are (NHWC, 0..255): the graph casts, "
                                      "divides by 255 and computes (x - mean) / std itself")
    return {**base, "shape": [n, h, w, 3], "layout": "NHWC", "dtype": "uint8", "range": [0, 255],
            "normalization": norm}


@dataclass
class ExportJob:
    """Everything a target may need to produce one artifact.

    Attributes:
        model: the float PyTorch model, in eval mode.
        precision: one of the target's ``precisions``.
        out_dir: the artifact folder to create (written atomically).
        metadata: the base metadata (variant, task, input/output description,
            checkpoint hash); the target adds its own fields (format, precision,
            tool versions, layout) before writing ``metadata.json``.
        calibration: calibration images, NCHW float32 in 0..1, from the training set.
        qat_model: the NNCF QAT model, when the INT8 route should start from it.
        qat_float_model: the QAT-fine-tuned float weights (a plain torch module with
            the fake quantizers removed), for targets that re-quantize with their
            own quantizer.
        onnx_path: an ONNX file (opset 17) of ``model``, handed over by the pipeline.
        onnx_qdq_path: a QDQ ONNX of the stripped QAT model, when available.
    """

    model: nn.Module
    precision: str
    out_dir: Path
    metadata: dict[str, Any]
    calibration: np.ndarray | None = None
    qat_model: nn.Module | None = None
    qat_float_model: nn.Module | None = None
    onnx_path: Path | None = None
    onnx_qdq_path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    """What an export produced."""

    target: str
    precision: str
    path: Path  # the model file (or .mlpackage folder)
    metadata_path: Path
    notes: list[str] = field(default_factory=list)


def check_input(x) -> np.ndarray:
    """The runners' input contract, checked before any conversion: NCHW RGB, float, in
    0..1 (every artifact normalizes in its graph). Returns a contiguous float32 array.

    The range is read from a strided sample (a few hundred values), so the check costs
    microseconds inside a latency loop; it exists for the two silent mistakes: pixels
    in 0..255 and inputs already normalized with mean/std.

    Raises:
        DataError: naming what was passed and what is expected.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != 3:
        raise DataError(f"model input must be N x 3 x H x W (NCHW RGB), got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"model input must be float RGB in 0..1, got {x.dtype}: pass pixels / 255")
    sample = x.reshape(-1)[::257] if x.size > 4096 else x.reshape(-1)
    lo, hi = float(sample.min()), float(sample.max())
    if not (lo >= -1e-3 and hi <= 1 + 1e-3):
        hint = ("the input looks mean/std-normalized: pass RGB in 0..1, the graph normalizes itself"
                if lo < -1e-3 else "pixels in 0..255: divide by 255")
        raise DataError(f"model input must be RGB in 0..1, got values in {lo:.3g}..{hi:.3g} ({hint})")
    return np.ascontiguousarray(x, dtype=np.float32)


def adapter_input(x: np.ndarray, spec) -> np.ndarray:
    """NCHW float RGB in 0..1 (checked) as the device runtime's adapter takes it for an
    artifact whose input is ``spec`` (its InputSpec): uint8 NHWC pixels, float NHWC
    (TFLite) or float NCHW."""
    if spec.dtype == "uint8":
        return to_uint8_nhwc(x)
    x = check_input(x)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if spec.layout == "NHWC" else x


def to_uint8_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW float RGB in 0..1 (checked) as the uint8 NHWC pixels it came from."""
    x = check_input(x)
    return np.ascontiguousarray(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))


class Runner(abc.ABC):
    """A loaded artifact that runs on this host.

    Every runner takes the PyTorch contract (NCHW float32 RGB in 0..1): ``prepare``
    checks it and turns it into what the artifact takes (``input_form``), ``run``
    runs prepared input. Latency is timed on ``run``, so a uint8 artifact is timed as
    an app runs it, on pixels it already holds.
    """

    input_form: str = FLOAT_NCHW

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Check ``x`` (NCHW float RGB in 0..1) and convert it to the artifact's input."""
        return to_uint8_nhwc(x) if self.input_form == UINT8_NHWC else check_input(x)

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one prepared batch; the model's output layout out (NCHW for heatmaps)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run one batch: NCHW float32 RGB in 0..1 in, the model's output layout out."""
        return self.run(self.prepare(x))

    def set_threads(self, n: int) -> None:  # pragma: no cover - optional
        """Fix the runtime's thread count where the runtime allows it."""


class AdapterRunner(Runner):
    """An exported artifact run through the device runtime's adapter
    (:mod:`hrnet_edge_runtime.adapters`), so every host check also runs the code that
    ``hrnet-edge-run`` runs on a device.

    The artifact's files are first compared with the sha256 its ``metadata.json``
    records: a changed or truncated file is an error, never a silently checked one.
    The adapter takes the artifact's own input (one image, its layout and dtype) and
    returns its raw output; this runner keeps the project's contract around it: NCHW
    float in (``prepare`` converts it with :func:`adapter_input`), batches split into
    single images, NHWC outputs (TFLite) turned back to NCHW.
    """

    def __init__(self, artifact_dir: Path, threads: int = 2):
        from hrnet_edge_runtime.metadata import load_artifact, verify_sha256

        with _runtime_errors(artifact_dir):
            self.artifact = load_artifact(artifact_dir)
            verify_sha256(self.artifact)
        self._open(threads)
        self.input_form = UINT8_NHWC if self.artifact.input.dtype == "uint8" else FLOAT_NCHW
        self._nhwc_out = self.artifact.output.get("layout") == "NHWC"

    def _open(self, threads: int) -> None:
        from hrnet_edge_runtime.adapters import open_adapter

        with _runtime_errors(self.artifact.dir):
            self.adapter = open_adapter(self.artifact, device="CPU", threads=threads)
        self.threads = threads

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return adapter_input(x, self.artifact.input)

    def run(self, x: np.ndarray) -> np.ndarray:
        with _runtime_errors(self.artifact.dir):
            y = np.concatenate([self.adapter.run(x[i:i + 1]) for i in range(x.shape[0])])
        return y.transpose(0, 3, 1, 2) if self._nhwc_out and y.ndim == 4 else y

    def set_threads(self, n: int) -> None:
        self.adapter.close()
        self._open(n)

    def runtime_facts(self) -> dict[str, Any]:
        """What the runtime reports it did (the adapter's ``info``), in the keys the
        check rows have always used: OpenVINO's config, inference precision and
        convolution kernels per precision."""
        info = self.adapter.info()
        return {k: info[k] for k in ("config", "inference_precision", "convolutions") if info.get(k) is not None}


@contextmanager
def _runtime_errors(where):
    """The device runtime's errors (a file that differs from its metadata, a runtime
    that cannot open it) as this project's ExportError naming the artifact."""
    from hrnet_edge_runtime.errors import RuntimeErrorBase

    from hrnet_edge.errors import ExportError

    try:
        yield
    except RuntimeErrorBase as exc:
        raise ExportError(f"{where}: {exc}") from exc


class Target(abc.ABC):
    """One export target (a format plus its runtime).

    Class attributes:
        name: short name used in folder names and reports, e.g. ``"openvino"``.
        precisions: the precisions this target exports.
        extra: the pip extra that installs its backend.
        suffix: the artifact's file suffix, e.g. ``".xml"``.
    """

    name: str = ""
    precisions: tuple[str, ...] = ()
    extra: str = ""
    suffix: str = ""
    # modules needed to export, and (when fewer) to run an artifact: a check process
    # that only runs a .tflite must not import onnx2tf and TensorFlow.
    modules: tuple[str, ...] = ()
    runtime_modules: tuple[str, ...] | None = None

    def available(self) -> tuple[bool, str]:
        """Whether the backend can be imported: (True, "") or (False, reason)."""
        return _importable(self.modules, self.extra)

    @abc.abstractmethod
    def export(self, job: ExportJob) -> Artifact:
        """Write ``job.out_dir/model<suffix>`` and ``metadata.json`` atomically.

        Raises:
            MissingDependency: the backend is not installed.
            ExportError: conversion failed; nothing is left in ``job.out_dir``.
        """

    def runnable(self) -> tuple[bool, str]:
        """Whether artifacts of this target can run on this host (Core ML: macOS only)."""
        mods = self.modules if self.runtime_modules is None else self.runtime_modules
        return _importable(mods, self.extra)

    @abc.abstractmethod
    def load(self, artifact_dir: Path, threads: int = 2) -> Runner:
        """Load an exported artifact folder into a Runner with ``threads`` threads."""

    def inspect(self, artifact_dir: Path) -> dict[str, Any]:
        """Structural facts about an artifact that need no execution: op counts,
        delegated vs fallback nodes, input/output specs. Used for every artifact and
        the only check possible for those that cannot run here."""
        return {}


class CallableRunner(Runner):
    """Wraps a plain function as a Runner."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        self.fn = fn

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)


def _importable(modules: tuple[str, ...], extra: str) -> tuple[bool, str]:
    from hrnet_edge.deps import require
    from hrnet_edge.errors import MissingDependency

    for module in modules:
        try:
            require(module, extra)
        except MissingDependency as exc:
            return False, str(exc)
    return True, ""


def delegation_notes(ops: dict[str, int], partitions: int, fallback: str, upsample_ops: tuple[str, ...]) -> list[str]:
    """One note on XNNPACK delegation: the whole graph in its partitions, or a warning
    naming the ops left to ``fallback`` kernels (with the remedy when they are the
    fuse layers' nearest upsampling, ``upsample_ops``)."""
    if not ops:
        return [f"the whole graph runs in {partitions} XNNPACK partition(s)"]
    listed = ", ".join(f"{op} x{n}" for op, n in ops.items())
    note = f"warning: not delegated to XNNPACK ({fallback} kernels between {partitions} partitions): {listed}"
    if any(u in op for op in ops for u in upsample_ops):
        note += "; [export] upsample_form = 'broadcast' writes them as ops XNNPACK delegates (same values, one partition)"
    return [note]
