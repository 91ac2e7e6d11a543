"""Put the activation ranges NNCF QAT learned into an INT8 ``.tflite`` file.

onnx2tf's full-integer conversion calibrates every activation range itself (min/max
over the calibration images), which discards what QAT learned: the TFLite INT8 model
then computes something other than the QAT model it was checked against. TFLite's
kernels derive their requantization multipliers from the tensors' scales when the
interpreter prepares the graph, so the ranges can be set in the flatbuffer after the
conversion; what has to stay consistent is:

* ops whose output must share the input's quantization (PAD, RESIZE_*, pooling,
  RESHAPE, CONCATENATION, ...): their tensors form one group and get one range, the
  union of every QAT range found in the group;
* the int32 bias of a convolution or fully connected layer is quantized with
  ``input_scale * weight_scale``: when the input's scale changes, the bias is
  re-quantized to the new scale.

Which TFLite tensor is which QAT tensor is decided by value, in two steps: each INT8
tensor (dequantized) finds the tensor of the same conversion's float32 model with the
same shape and the nearest values (the two files order and name their fused ops
differently), and that float tensor matches a QAT quantizer when the values agree to
float rounding, on the images the QAT model ran.
Groups without a match keep onnx2tf's calibration; the returned facts count both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hrnet_edge.deps import require

# Output quantization must equal input 0's (TFLite kernels and XNNPACK check it).
SAME_SCALE_OPS = {"PAD", "PADV2", "MIRROR_PAD", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR",
                  "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "TRANSPOSE", "SQUEEZE",
                  "EXPAND_DIMS", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V", "GATHER",
                  "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "CONCATENATION"}
# (input, weights, bias) operand positions of the ops with an int32 bias.
BIAS_OPS = {"CONV_2D": (0, 1, 2), "DEPTHWISE_CONV_2D": (0, 1, 2), "FULLY_CONNECTED": (0, 1, 2),
            "TRANSPOSE_CONV": (2, 1, 3)}
INT8 = 9  # schema TensorType.INT8
# An INT8 tensor is the float tensor it approximates when the RMS difference is below
# this share of the float tensor's range and TWIN_MARGIN times below the next candidate's:
# accumulated quantization noise is a few per cent of the range (an untrained net's,
# the worst case, measured 1-6 %), two different tensors of one shape differ by
# tens of per cent.
TWIN_TOLERANCE = 0.1
TWIN_MARGIN = 1.5


def _name(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _op_names(model, schema=None) -> list[str]:
    """The builtin (or custom) op name of each operator of the first subgraph."""
    from converters.tflite import _op_names as names_and_custom

    return names_and_custom(model)[0]


def _all_tensors(path: Path, images: np.ndarray) -> dict[int, np.ndarray]:
    """Every intermediate activation of the model at ``path`` on ``images`` (NCHW in
    0..1), by tensor index, as float (int8 tensors dequantized), batched along axis 0
    and in NCHW where the tensor is 4-D."""
    litert = require("ai_edge_litert.interpreter", "tflite")
    it = litert.Interpreter(model_path=str(path), num_threads=2, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    details = it.get_tensor_details()
    seen: dict[int, list[np.ndarray]] = {}
    for img in images:
        it.set_tensor(inp["index"], np.ascontiguousarray(img.transpose(1, 2, 0)[None], np.float32))
        it.invoke()
        for d in details:
            try:
                value = it.get_tensor(d["index"])
            except ValueError:  # a tensor the interpreter never allocated
                continue
            if value.ndim < 1 or value.shape[0] != 1:
                continue
            if value.dtype == np.int8:
                scale, zero = d["quantization"]
                value = (value.astype(np.float32) - zero) * scale
            elif value.dtype != np.float32:
                continue
            seen.setdefault(d["index"], []).append(value.copy())
    out = {}
    for index, values in seen.items():
        if len(values) == len(images):
            v = np.concatenate(values)
            out[index] = v.transpose(0, 3, 1, 2) if v.ndim == 4 else v
    return out


def _producers(model, schema) -> dict[int, str]:
    """Tensor index -> the op that writes it."""
    return {int(t): name for op, name in zip(model.subgraphs[0].operators, _op_names(model, schema))
            for t in op.outputs}


def _minmax(path: Path, images: np.ndarray, indices: set[int]) -> dict[int, tuple[float, float]]:
    """(min, max) of the float model's tensors ``indices`` over ``images``."""
    if not indices:
        return {}
    litert = require("ai_edge_litert.interpreter", "tflite")
    it = litert.Interpreter(model_path=str(path), num_threads=2, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    seen: dict[int, tuple[float, float]] = {}
    for img in images:
        it.set_tensor(inp["index"], np.ascontiguousarray(img.transpose(1, 2, 0)[None], np.float32))
        it.invoke()
        for j in indices:
            v = it.get_tensor(j)
            lo, hi = seen.get(j, (np.inf, -np.inf))
            seen[j] = (min(lo, float(v.min())), max(hi, float(v.max())))
    return seen


def _twins(int8_values: dict[int, np.ndarray], float_values: dict[int, np.ndarray],
           int8_ops: dict[int, str], float_ops: dict[int, str]) -> dict[int, int]:
    """INT8 tensor -> the float32 model's tensor it approximates: written by the same
    kind of op, same shape, nearest values by RMS relative to the float tensor's range
    (see TWIN_TOLERANCE)."""
    by_shape: dict[tuple, list[int]] = {}
    for j, v in float_values.items():
        by_shape.setdefault((float_ops.get(j), v.shape), []).append(j)
    twins = {}
    for i, q in int8_values.items():
        errs = sorted((float(np.sqrt(((q - float_values[j]) ** 2).mean()))
                       / max(float(np.ptp(float_values[j])), 1e-12), j)
                      for j in by_shape.get((int8_ops.get(i), q.shape), []))
        if not errs or errs[0][0] > TWIN_TOLERANCE:
            continue
        # Equal float tensors (a PAD's interior, a no-op RESHAPE) are one tensor.
        rivals = [e for e, j in errs[1:] if not np.array_equal(float_values[j], float_values[errs[0][1]])]
        if not rivals or rivals[0] >= TWIN_MARGIN * errs[0][0]:
            twins[i] = errs[0][1]
    return twins


class _Groups:
    """Union-find over tensor indices."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        self.parent.setdefault(i, i)
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def carry_ranges_to_tflite(int8_path: Path, float_path: Path, qat, images: np.ndarray,
                           calibration: np.ndarray | None = None) -> dict[str, Any]:
    """Rewrite ``int8_path`` in place with the QAT ranges; return what was done.

    Args:
        int8_path: the full-integer model (float32 I/O with QUANTIZE/DEQUANTIZE inside).
        float_path: the float32 model of the same conversion.
        qat: :func:`quantization.carry.qat_activation_tensors` on ``images``.
        images: NCHW float32 in 0..1, the images ``qat`` was captured on.
        calibration: NCHW images; tensors QAT did not quantize get the min/max their
            float twins reach on them (onnx2tf's calibrator otherwise ties the input
            normalization's subtraction to the multiplication's much wider scale,
            leaving about 54 levels per input channel). None keeps onnx2tf's ranges.
    """
    import torch

    from quantization.carry import affine_qparams, match_ranges, union_range

    fb = require("ai_edge_litert.tools.flatbuffer_utils", "tflite")
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    model = fb.read_model(str(int8_path))
    sub = model.subgraphs[0]
    ops = _op_names(model, schema)
    floats = _all_tensors(float_path, images)
    float_model = fb.read_model(str(float_path))
    twin = _twins(_all_tensors(int8_path, images), floats, _producers(model, schema),
                  _producers(float_model, schema))

    def activation(i: int) -> bool:
        t = sub.tensors[i]
        q = t.quantization
        return (t.type == INT8 and q is not None and q.scale is not None and len(q.scale) == 1
                and not _has_data(model, t))

    groups = _Groups()
    for op, name in zip(sub.operators, ops):
        if name in SAME_SCALE_OPS:
            ins = [i for i in (op.inputs if name == "CONCATENATION" else op.inputs[:1]) if i >= 0]
            for i in list(ins) + [o for o in op.outputs if o >= 0]:
                if activation(i):
                    groups.join(i, op.outputs[0])

    members: dict[int, list[int]] = {}
    for i in range(len(sub.tensors)):
        if activation(i):
            members.setdefault(groups.find(i), []).append(i)

    carried, kept, recalibrated, used = 0, 0, 0, set()
    changed: set[int] = set()  # tensors whose scale was rewritten
    ranges: dict[int, tuple[float, float]] = {}
    for root, tensors in members.items():
        matched: set[int] = set()
        for i in tensors:
            value = floats.get(twin[i]) if i in twin else None
            if value is not None:
                matched.update(match_ranges([torch.from_numpy(value)], qat))
        if matched:
            ranges[root] = union_range(qat[k][0] for k in matched)
            carried += len(tensors)
            used |= matched
    left = {root: [twin[i] for i in tensors if i in twin] for root, tensors in members.items()
            if root not in ranges}
    if calibration is not None:
        seen = _minmax(float_path, calibration, {j for js in left.values() for j in js})
        for root, js in left.items():
            if js and all(j in seen for j in js):
                ranges[root] = union_range(seen[j] for j in js)
                recalibrated += len(members[root])
    for root, tensors in members.items():
        if root not in ranges:
            kept += len(tensors)
            continue
        scale, zero = affine_qparams(*ranges[root])
        for i in tensors:
            q = sub.tensors[i].quantization
            changed.add(i)
            q.scale = np.array([scale], np.float32)
            q.zeroPoint = np.array([zero], np.int64)
            q.min, q.max = None, None

    biases = 0
    for op, name in zip(sub.operators, ops):
        if name in BIAS_OPS:
            x, w, b = (op.inputs[k] if k < len(op.inputs) else -1 for k in BIAS_OPS[name])
            if x in changed and b >= 0:
                _requantize_bias(model, sub, x, w, b)
                biases += 1
    int8_path.write_bytes(bytes(fb.convert_object_to_bytearray(model)))
    return {"activation_ranges_from_qat": carried, "activation_ranges_recalibrated": recalibrated,
            "activation_ranges_calibrated": kept,
            "qat_activation_quantizers": len(qat),
            "qat_activation_quantizers_unmatched": len(qat) - len(used),
            "biases_requantized": biases}


def _has_data(model, t) -> bool:
    buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def _requantize_bias(model, sub, x: int, w: int, b: int) -> None:
    """Re-quantize the int32 bias to ``input_scale * weight_scale`` after a scale change."""
    bias = sub.tensors[b]
    old_scale = np.asarray(bias.quantization.scale, np.float64)
    w_scale = np.asarray(sub.tensors[w].quantization.scale, np.float64)
    new_scale = float(sub.tensors[x].quantization.scale[0]) * w_scale
    buf = model.buffers[bias.buffer]
    values = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), dtype=np.int32).astype(np.float64)
    new = np.clip(np.round(values * old_scale / new_scale), -2**31, 2**31 - 1).astype(np.int32)
    # A fresh buffer: the old one may be shared with another tensor.
    fresh = type(buf)()
    fresh.data = np.frombuffer(new.tobytes(), dtype=np.uint8)
    model.buffers.append(fresh)
    bias.buffer = len(model.buffers) - 1
    bias.quantization.scale = new_scale.astype(np.float32)
    bias.quantization.zeroPoint = np.zeros(len(new_scale), np.int64)


def make_uint8_input(path: Path) -> dict[str, Any]:
    """Rewrite the INT8 ``.tflite`` at ``path`` in place to take uint8 RGB NHWC.

    The float input becomes a uint8 tensor quantized with scale 1/255 and zero point 0
    (so byte ``v`` means ``v / 255``, exactly the float the model took), and the graph's
    first QUANTIZE, which read the float, now requantizes uint8 to the int8 scale the
    normalization expects: the input keeps one step per grey level.

    Raises:
        ExportError: the input is not a float tensor read by one QUANTIZE.
    """
    from hrnet_edge.errors import ExportError

    fb = require("ai_edge_litert.tools.flatbuffer_utils", "tflite")
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    model = fb.read_model(str(path))
    sub = model.subgraphs[0]
    i = sub.inputs[0]
    readers = [name for op, name in zip(sub.operators, _op_names(model, schema)) if i in op.inputs]
    t = sub.tensors[i]
    if t.type != schema.TensorType.FLOAT32 or readers != ["QUANTIZE"]:
        raise ExportError(f"tflite uint8 input: expected a float32 input read by one QUANTIZE, "
                          f"got type {t.type} read by {readers}")
    q = schema.QuantizationParametersT()
    q.scale = np.array([1 / 255], np.float32)
    q.zeroPoint = np.array([0], np.int64)
    t.type, t.quantization = schema.TensorType.UINT8, q
    path.write_bytes(bytes(fb.convert_object_to_bytearray(model)))
    return {"input": "uint8 NHWC, scale 1/255, zero point 0", "first_op": "QUANTIZE uint8 -> int8"}
