"""TFLite target: onnx2tf converts the ONNX file the pipeline hands over.

* ``fp32`` / ``fp16``: onnx2tf's ``*_float32`` / ``*_float16`` models (fp16 stores the
  weights in fp16 behind DEQUANTIZE ops; compute stays fp32 on CPU).
* ``int8``: full-integer quantization (per-channel weights, int8 activations)
  calibrated on ``job.calibration``, the real training images. The normalization is
  inside the graph, so onnx2tf gets mean 0 / std 1. **The int8 artifact keeps float32
  input and output** (``*_integer_quant``, a QUANTIZE op after the input and a
  DEQUANTIZE op before the output): every artifact of the project then shares one input
  contract (RGB in 0..1) and the numbers are the same as with int8 I/O, since those are
  the very ops that move to the app. ``job.options["int8_io"] = True`` selects
  ``*_full_integer_quant`` (int8 in and out) instead; its metadata then gives the
  scale and zero point, and the runner (de)quantizes with them.

The artifact is NHWC: input (1, H, W, 3), 4-D outputs (1, h, w, C). The metadata
records that real layout; the runner takes NCHW and returns NCHW like PyTorch.

onnx2tf quirks handled here (TOOLCHAIN.md): it downloads a sample-image file unless
``calibration_image_sample_data_20x128x128x3_float32.npy`` is in the working
directory, so it runs in a temporary directory where that file is written from our
own images; it rewrites its input ONNX in place, so it gets a copy; it calls
``sys.exit`` on errors, which becomes :class:`ExportError` with its message. Models
that need Flex (TF Select) ops are refused: the LiteRT interpreter cannot run them.

One onnx2tf run writes every precision at once, so the last run's output is kept (in
a temporary folder, for this process) and reused by the next export of the same ONNX
bytes (and, for int8, the same calibration images); ``job.options["reuse_conversion"]
= False`` forces a fresh run.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from converters.base import (UINT8_INPUT, AdapterRunner, Artifact, ExportJob, Runner, Target,
                             delegation_notes, quantized_as, uint8_input_spec)
from converters.metadata import EMBED_KEY, embedded_json, finish_metadata, staged_artifact, write_metadata
from hrnet_edge.deps import require
from hrnet_edge.errors import ExportError, unknown_choice
from hrnet_edge.io import sha256_file

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
SUFFIXES = {"fp32": "float32", "fp16": "float16", "int8": "integer_quant",
            "int8_io": "full_integer_quant"}


@contextlib.contextmanager
def _quiet_in(workdir: Path, log_path: Path) -> Iterator[None]:
    """Run inside ``workdir`` with stdout/stderr (Python and C level) sent to a log."""
    old_cwd = os.getcwd()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            os.chdir(workdir)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            _detach_log_handlers(log)
            os.chdir(old_cwd)
            log.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _detach_log_handlers(stream) -> None:
    """Point logging handlers created during the redirect (TensorFlow's, absl's) back
    at stderr: left on the closed log file, a later warning from any library printed
    'Logging error ... I/O operation on closed file' instead of its message."""
    import logging

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                        if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is stream:
                h.setStream(sys.stderr)


@contextlib.contextmanager
def _no_saved_model() -> Iterator[None]:
    """Within: ``tf.saved_model.save`` writes nothing.

    onnx2tf saves a TensorFlow SavedModel before it converts, but it makes the float32
    and float16 ``.tflite`` files from the Keras model's concrete function; only its
    full-integer conversion reads the SavedModel back (that run is left alone). On the
    detection model (128x128) a float run took 11.0 s instead of 15.3 s (Intel Xeon)
    and wrote byte-identical ``.tflite`` files.
    """
    import tensorflow as tf

    save = tf.saved_model.save
    tf.saved_model.save = lambda *args, **kwargs: None
    try:
        yield
    finally:
        tf.saved_model.save = save


def _log_error(log_path: Path, limit: int = 1500) -> str:
    """The error lines of onnx2tf's log (ANSI colours removed), or its tail."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace")) if log_path.exists() else ""
    errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
    return ("\n".join(errors) or text.strip())[-limit:]


def _sample_images(calibration: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """NHWC float32 images for onnx2tf's own output check: our calibration images, or
    smooth deterministic ones when a float export gets none."""
    if calibration is not None:
        return np.ascontiguousarray(calibration[:20].transpose(0, 2, 3, 1), dtype=np.float32)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    imgs = [np.stack([np.sin(6 * xx + c + i) * 0.5 + 0.5 for c in range(3)], -1) * 0.8
            + 0.2 * rng.random((height, width, 3)) for i in range(4)]
    return np.clip(np.stack(imgs), 0, 1).astype(np.float32)


def _check_calibration(calibration: np.ndarray | None, input_size: tuple[int, int]) -> np.ndarray:
    h, w = input_size
    if calibration is None:
        raise ExportError("tflite int8 needs calibration images (job.calibration, N x 3 x H x W "
                          "float32 in 0..1 from the training set)")
    cal = np.asarray(calibration, dtype=np.float32)
    if cal.ndim != 4 or cal.shape[1:] != (3, h, w) or len(cal) == 0:
        raise ExportError(f"calibration images must be (N, 3, {h}, {w}), got {cal.shape}")
    if cal.min() < -1e-3 or cal.max() > 1 + 1e-3:
        raise ExportError(f"calibration images must be RGB in 0..1, got {cal.min():.3g}..{cal.max():.3g}")
    return cal


def _onnx2tf(onnx_path: Path, work: Path, samples: np.ndarray, calib: np.ndarray | None) -> Path:
    """Run onnx2tf on a copy of ``onnx_path`` inside ``work``; return its output folder."""
    onnx = require("onnx", "tflite")
    model_copy = work / "model.onnx"  # onnx2tf may rewrite its input in place
    shutil.copyfile(onnx_path, model_copy)
    input_name = onnx.load(str(model_copy), load_external_data=False).graph.input[0].name
    np.save(work / SAMPLE_FILE, samples)  # found in the cwd, so onnx2tf never downloads
    kwargs: dict[str, Any] = {}
    if calib is not None:
        np.save(work / "calibration.npy", np.ascontiguousarray(calib.transpose(0, 2, 3, 1)))
        zeros, ones = np.zeros((1, 1, 1, 3), np.float32), np.ones((1, 1, 1, 3), np.float32)
        kwargs = dict(
            output_integer_quantized_tflite=True, quant_type="per-channel",
            # mean 0 / std 1: onnx2tf feeds (x - mean) / std, and our graph normalizes itself
            custom_input_op_name_np_data_path=[[input_name, str(work / "calibration.npy"), zeros, ones]],
            input_quant_dtype="int8", output_quant_dtype="int8",
        )
    out, log = work / "out", work / "onnx2tf.log"
    try:
        with _quiet_in(work, log):
            onnx2tf = require("onnx2tf", "tflite")  # imports tensorflow: noisy on stderr
            with _no_saved_model() if calib is None else contextlib.nullcontext():
                onnx2tf.convert(input_onnx_file_path=str(model_copy), output_folder_path=str(out),
                                non_verbose=True, **kwargs)
    except SystemExit as exc:  # onnx2tf reports errors by sys.exit(1)
        if exc.code not in (0, None):
            raise ExportError(f"onnx2tf failed (exit {exc.code}): {_log_error(log)}") from None
    except Exception as exc:
        raise ExportError(f"onnx2tf failed: {type(exc).__name__}: {exc}\n{_log_error(log)}") from exc
    return out


class _Conversion:
    """The output folder of the last onnx2tf run, kept for the next export of the same
    ONNX file: one run writes the float32, float16 and (when calibrated) int8 models
    together, and each run takes tens of seconds."""

    def __init__(self, key: str, calib_key: str | None, tmp: tempfile.TemporaryDirectory, out: Path):
        self.key, self.calib_key, self.tmp, self.out = key, calib_key, tmp, out


_LAST: _Conversion | None = None


def _convert(onnx_path: Path, samples: np.ndarray, calib: np.ndarray | None, reuse: bool) -> Path:
    """onnx2tf's output folder for ``onnx_path``, reusing the last run when it holds
    what is asked for (same ONNX bytes; for int8 also the same calibration images)."""
    global _LAST
    key = sha256_file(onnx_path)
    calib_key = None if calib is None else hashlib.sha256(np.ascontiguousarray(calib).tobytes()).hexdigest()
    last = _LAST
    if reuse and last is not None and last.key == key and calib_key in (None, last.calib_key) \
            and last.out.is_dir():
        return last.out
    tmp = tempfile.TemporaryDirectory(prefix="onnx2tf-")
    try:
        out = _onnx2tf(onnx_path, Path(tmp.name), samples, calib)
    except BaseException:
        tmp.cleanup()
        raise
    if last is not None:
        last.tmp.cleanup()
    _LAST = _Conversion(key, calib_key, tmp, out)
    return out


def _op_names(model) -> tuple[list[str], set[str]]:
    """Operator type names of every op in every subgraph of a flatbuffer ModelT, and
    the set of those that are custom ops (Flex ops are custom ops named ``Flex*``)."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names, custom = [], set()
    for sub in model.subgraphs:
        for op in sub.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            num = max(code.builtinCode, code.deprecatedBuiltinCode)
            if num == schema.BuiltinOperator.CUSTOM:
                names.append(_text(code.customCode))
                custom.add(names[-1])
            else:
                names.append(builtin.get(num, f"BUILTIN_{num}"))
    return names, custom


def _embed(path: Path, meta_json: str) -> None:
    """Add the metadata as a TFLite model-metadata entry (name ``hrnet_edge``)."""
    fb = require("ai_edge_litert.tools.flatbuffer_utils", "tflite")
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    model = fb.read_model(str(path))
    buf = schema.BufferT()
    buf.data = np.frombuffer(meta_json.encode(), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = EMBED_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != EMBED_KEY] + [entry]
    path.write_bytes(bytes(fb.convert_object_to_bytearray(model)))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_embedded_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata embedded in a ``.tflite`` file by this target."""
    fb = require("ai_edge_litert.tools.flatbuffer_utils", "tflite")
    model = fb.read_model(str(path))
    for entry in model.metadata or []:
        if _text(entry.name) == EMBED_KEY:
            return json.loads(bytes(np.asarray(model.buffers[entry.buffer].data, np.uint8)).decode())
    raise ExportError(f"{path} carries no '{EMBED_KEY}' metadata")


def _io_spec(detail: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": detail["name"], "shape": [int(d) for d in detail["shape"]],
                            "dtype": np.dtype(detail["dtype"]).name}
    if spec["dtype"] in ("int8", "uint8", "int16"):
        scale, zero = detail["quantization"]
        spec["quantization"] = {"scale": float(scale), "zero_point": int(zero),
                                "recipe": "q = round(x / scale) + zero_point; x = (q - zero_point) * scale"}
    return spec


def _delegation(path: Path, it=None) -> dict[str, Any]:
    """Delegate partitions and the ops left to the CPU kernels (XNNPACK by default).

    The interpreter keeps the original nodes after delegation and adds one DELEGATE
    node per partition, so an op is found non-delegated by data flow: its output feeds
    a DELEGATE node, a graph output, or another non-delegated op, without being an
    output of a partition itself.
    """
    if it is None:
        litert = require("ai_edge_litert.interpreter", "tflite")
        it = litert.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    ops = it._get_ops_details()  # experimental API; the only window on the nodes
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    plain = [o for o in ops if o["op_name"] != "DELEGATE"]
    if not delegates:
        return {"delegate_partitions": 0, "delegated_ops": 0, "non_delegated_ops": dict(
            collections.Counter(o["op_name"] for o in plain))}
    made_by_delegate = {int(t) for d in delegates for t in d["outputs"]}
    wanted = {int(t) for d in delegates for t in d["inputs"]}
    wanted |= {int(d["index"]) for d in it.get_output_details()}
    cpu: set[int] = set()
    changed = True
    while changed:
        changed = False
        for o in plain:
            outs = {int(t) for t in o["outputs"]}
            if o["index"] not in cpu and outs & wanted and not outs & made_by_delegate:
                cpu.add(o["index"])
                wanted |= {int(t) for t in o["inputs"] if t >= 0}
                changed = True
    left = collections.Counter(o["op_name"] for o in plain if o["index"] in cpu)
    return {"delegate_partitions": len(delegates), "delegated_ops": len(plain) - len(cpu),
            "non_delegated_ops": dict(sorted(left.items()))}


def _carry_qat_ranges(job: ExportJob, conversion: Path, path: Path, calib: np.ndarray) -> dict[str, Any]:
    """Write the QAT model's activation ranges into the INT8 file at ``path``."""
    import torch

    from converters.tflite_ranges import carry_ranges_to_tflite
    from quantization.carry import qat_activation_tensors

    float_path = conversion / f"model_{SUFFIXES['fp32']}.tflite"
    if not float_path.is_file():
        raise ExportError(f"onnx2tf wrote no {float_path.name}, which carrying the QAT ranges needs")
    probe = np.ascontiguousarray(calib[:2], dtype=np.float32)
    qat = qat_activation_tensors(job.qat_model, torch.from_numpy(probe))
    return carry_ranges_to_tflite(path, float_path, qat, probe, calibration=calib)


class TfliteTarget(Target):
    """TFLite via onnx2tf from ``job.onnx_path``; runs on the LiteRT interpreter."""

    name = "tflite"
    precisions = ("fp32", "fp16", "int8", UINT8_INPUT)
    extra = "tflite"
    suffix = ".tflite"
    modules = ("onnx2tf", "tensorflow", "ai_edge_litert.interpreter")
    runtime_modules = ("ai_edge_litert.interpreter",)

    def export(self, job: ExportJob) -> Artifact:
        if job.precision not in self.precisions:
            raise unknown_choice("tflite precision", job.precision, self.precisions)
        if job.onnx_path is None or not Path(job.onnx_path).is_file():
            raise ExportError(f"tflite needs the pipeline's opset-17 ONNX file (job.onnx_path), "
                              f"got {job.onnx_path}")
        input_size = tuple(job.model.cfg.input_size)  # type: ignore[attr-defined]
        quant = quantized_as(job.precision)
        int8_io = job.precision == "int8" and bool(job.options.get("int8_io", False))
        calib = _check_calibration(job.calibration, input_size) if quant == "int8" else None
        samples = _sample_images(calib if calib is not None else job.calibration, *input_size)
        reuse = bool(job.options.get("reuse_conversion", True))
        with staged_artifact(Path(job.out_dir), self.name, job.precision) as stage:
            out = _convert(Path(job.onnx_path), samples, calib, reuse)
            produced = out / f"model_{SUFFIXES['int8_io' if int8_io else quant]}.tflite"
            if not produced.is_file():
                raise ExportError(f"onnx2tf wrote no {produced.name}; it wrote "
                                  f"{sorted(p.name for p in out.glob('*.tflite'))}")
            path = stage / f"model{self.suffix}"
            shutil.copyfile(produced, path)
            carried = None
            if quant == "int8" and job.qat_model is not None and job.options.get("carry_qat_ranges", True):
                carried = _carry_qat_ranges(job, out, path, calib)
            uint8 = None
            if job.precision == UINT8_INPUT:
                from converters.tflite_ranges import make_uint8_input

                uint8 = make_uint8_input(path)
            meta = self._metadata(job, path, int8_io, carried, uint8)
            _embed(path, embedded_json(meta))
            write_metadata(stage, meta, path)
        final = Path(job.out_dir)
        return Artifact(self.name, job.precision, final / path.name, final / "metadata.json",
                        list(meta["notes"]))

    def _metadata(self, job: ExportJob, path: Path, int8_io: bool,
                  carried: dict[str, Any] | None = None,
                  uint8: dict[str, Any] | None = None) -> dict[str, Any]:
        fb = require("ai_edge_litert.tools.flatbuffer_utils", "tflite")
        flex = sorted({n for n in _op_names(fb.read_model(str(path)))[1] if n.startswith("Flex")})
        if flex:  # the stock LiteRT interpreter has no TF Select kernels
            raise ExportError(f"onnx2tf produced Flex (TF Select) ops {flex}, which the LiteRT "
                              "interpreter cannot run")
        litert = require("ai_edge_litert.interpreter", "tflite")
        it = litert.Interpreter(model_path=str(path), num_threads=1)
        inp = {**_io_spec(it.get_input_details()[0]), "layout": "NHWC"}
        if job.precision == UINT8_INPUT:
            inp = {**uint8_input_spec(job.metadata["input"]), **inp}
        out = _io_spec(it.get_output_details()[0])
        out["layout"] = "NHWC" if len(out["shape"]) == 4 else job.metadata["output"].get("layout")
        notes = ["the artifact is NHWC; hrnet-edge's runner transposes from/to NCHW"]
        delegation = _delegation(path, it)
        notes.extend(delegation_notes(delegation.get("non_delegated_ops", {}),
                                      delegation.get("delegate_partitions", 0), "LiteRT",
                                      ("RESIZE_NEAREST_NEIGHBOR",)))
        quant = None
        if quantized_as(job.precision) == "int8":
            quant = {"tool": "onnx2tf full-integer", "weights": "int8 per-channel",
                     "activations": "int8 per-tensor", "calibration_images": int(len(job.calibration)),
                     "io": "int8" if int8_io else "float32 (QUANTIZE/DEQUANTIZE inside the graph)"}
            if uint8 is not None:
                quant.update(io="uint8 RGB NHWC in (scale 1/255), float32 out", uint8_input=uint8)
            if carried is not None:
                quant["method"] = (f"onnx2tf full-integer conversion, then the activation ranges NNCF QAT "
                                   f"learned written into {carried['activation_ranges_from_qat']} tensors; "
                                   f"{carried['activation_ranges_recalibrated']} min/max-calibrated on their own "
                                   f"(input normalization), {carried['activation_ranges_calibrated']} keep onnx2tf's")
                quant.update(carried)
        if job.precision == "fp16":
            notes.append("fp16 weights dequantized to fp32 at load; compute is fp32 on CPU")
        return finish_metadata(job.metadata, self.name, job.precision, input=inp, output=out,
                               notes=notes, extra={"format": "tflite", "quantization": quant,
                                                   "delegation": delegation,
                                                   "upsample_form": {"form": str(job.options.get(
                                                       "upsample_form", "interpolate")), "in": "the ONNX handed over"},
                                                   "runtime": {"name": "litert", "delegate": "XNNPACK"}})

    def load(self, artifact_dir: Path, threads: int = 2) -> Runner:
        # through the device runtime's adapter, the int8-I/O variant too (the adapter
        # quantizes the float input and dequantizes the output with the tensors' scales)
        return AdapterRunner(Path(artifact_dir), threads)

    def inspect(self, artifact_dir: Path) -> dict[str, Any]:
        fb = require("ai_edge_litert.tools.flatbuffer_utils", "tflite")
        path = Path(artifact_dir) / f"model{self.suffix}"
        names, custom = _op_names(fb.read_model(str(path)))
        facts: dict[str, Any] = {
            "op_counts": dict(sorted(collections.Counter(names).items())),
            "num_ops": len(names),
            "flex_ops": sorted(n for n in custom if n.startswith("Flex")),
            "custom_ops": sorted(custom),
            "metadata_json": (Path(artifact_dir) / "metadata.json").exists(),
        }
        try:
            facts["embedded_metadata"] = bool(read_embedded_metadata(path))
        except ExportError:
            facts["embedded_metadata"] = False
        try:  # needs a loadable model (no Flex ops)
            litert = require("ai_edge_litert.interpreter", "tflite")
            it = litert.Interpreter(model_path=str(path), num_threads=1)
            facts.update(_delegation(path, it))
            facts["inputs"] = [_io_spec(d) for d in it.get_input_details()]
            facts["outputs"] = [_io_spec(d) for d in it.get_output_details()]
        except (RuntimeError, ValueError) as exc:
            facts["interpreter_error"] = str(exc)
        return facts
