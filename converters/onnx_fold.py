"""Fold BatchNorm into the quantized convolutions of a QDQ ONNX graph.

NNCF QAT quantizes a convolution's weights and leaves its BatchNorm after it, so the
QDQ export reads ``DequantizeLinear(W) -> Conv -> BatchNormalization -> [Relu] ->
QuantizeLinear``. ONNX Runtime fuses ``DQ -> Conv -> [Relu] -> Q`` into an integer
``QLinearConv`` only when nothing sits between the convolution and the next
quantizer; with the BatchNorm there it runs every convolution in float between
dequantize and quantize nodes, slower than the FP32 model.

The fold is exact in what it computes: with ``a = gamma / sqrt(var + eps)`` per output
channel, ``BN(conv(x, s * q)) = conv(x, (s * |a|) * (sign(a) * q)) + (b - mean) * a +
beta``. The integer weights keep their values (a sign flip per channel, which a
symmetric 8-bit grid allows) and the per-channel scale absorbs ``|a|``, so the weights
stay on the grid QAT trained them on; only float rounding changes.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def fold_batchnorm(model) -> dict[str, Any]:
    """Fold every foldable BatchNormalization into its quantized Conv, in place.

    First the weights' constant ``QuantizeLinear`` nodes become int8 initializers (what
    ONNX Runtime would compute at load) and constants passed through ``Identity`` are
    read directly, so the patterns below see the integer weights.

    A BatchNorm is folded when it directly follows a Conv that is its only consumer,
    whose weights come from a per-output-channel (or per-tensor) ``DequantizeLinear``
    of a symmetric int8 initializer used by that Conv alone. Anything else stays.

    Returns:
        ``{"folded": n, "left": m}``, the BatchNorm nodes folded and left.
    """
    from onnx import numpy_helper

    graph = model.graph
    _materialize_constants(graph)
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers = Counter(name for node in graph.node for name in node.input)
    consumers.update(o.name for o in graph.output)

    def array(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    removed, left = [], 0
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = producer.get(bn.input[0])
        folded = False
        if conv is not None and conv.op_type == "Conv" and consumers[conv.output[0]] == 1:
            folded = _fold_one(graph, bn, conv, producer, consumers, inits, array, put)
        if folded:
            removed.append(bn)
        else:
            left += 1
    for bn in removed:
        graph.node.remove(bn)
    _prune(graph)
    return {"folded": len(removed), "left": left}


def _prune(graph) -> None:
    """Drop nodes whose outputs nothing reads, then initializers nothing reads."""
    wanted = {o.name for o in graph.output}
    for node in reversed(list(graph.node)):
        if any(o in wanted for o in node.output):
            wanted.update(i for i in node.input if i)
        else:
            graph.node.remove(node)
    for init in list(graph.initializer):
        if init.name not in wanted:
            graph.initializer.remove(init)


def _fold_one(graph, bn, conv, producer, consumers, inits, array, put) -> bool:
    dq = producer.get(conv.input[1])
    if dq is None or dq.op_type != "DequantizeLinear" or consumers[dq.output[0]] != 1:
        return False
    q_name, s_name = dq.input[0], dq.input[1]
    zp_name = dq.input[2] if len(dq.input) > 2 else ""
    q, scale = array(q_name), array(s_name)
    zp = array(zp_name) if zp_name else None
    if q is None or scale is None or q.dtype != np.int8 or (zp is not None and np.any(zp != 0)):
        return False
    if consumers[q_name] != 1 or consumers[s_name] != 1 or q.min() < -127:
        return False  # shared constants, or a -128 that a sign flip would overflow
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1 and axis != 0:
        return False
    gamma, beta, mean, var = (array(name) for name in bn.input[1:5])
    if any(v is None for v in (gamma, beta, mean, var)):
        return False
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    a = (gamma / np.sqrt(var + eps)).astype(np.float64)
    out_channels = q.shape[0]
    if a.shape != (out_channels,):
        return False
    per_channel = np.broadcast_to(scale.astype(np.float64), (out_channels,))
    new_scale = (per_channel * np.abs(a)).astype(np.float32)
    if np.any(new_scale <= 0):
        return False
    sign = np.where(a < 0, -1, 1).astype(np.int8).reshape((-1,) + (1,) * (q.ndim - 1))
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    bias = array(bias_name) if bias_name else np.zeros(out_channels, np.float32)
    if bias is None or (bias_name and consumers[bias_name] != 1):
        return False
    new_bias = ((bias.astype(np.float64) - mean) * a + beta).astype(np.float32)

    put(q_name, (q * sign).astype(np.int8))
    put(s_name, new_scale)
    if scale.size == 1:  # now per channel: the DequantizeLinear needs axis 0
        _set_axis(dq, 0)
        if zp is not None:
            put(zp_name, np.zeros(out_channels, np.int8))
    if bias_name:
        put(bias_name, new_bias)
    else:
        from onnx import numpy_helper

        name = f"{conv.output[0]}_folded_bias"
        graph.initializer.append(numpy_helper.from_array(new_bias, name))
        inits[name] = graph.initializer[-1]
        conv.input.append(name)
    conv.output[0] = bn.output[0]
    return True


def _materialize_constants(graph) -> None:
    """Constant ``QuantizeLinear`` -> int8 initializer; inputs read through ``Identity``
    or ``Constant`` nodes -> the initializer itself (what is left unused, :func:`_prune`
    removes)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    values: dict[str, np.ndarray] = {}

    def const(name: str) -> np.ndarray | None:
        if name in values:
            return values[name]
        if name in inits:
            values[name] = numpy_helper.to_array(inits[name])
            return values[name]
        return None

    def add_init(name: str, value: np.ndarray) -> None:
        tensor = numpy_helper.from_array(value, name)
        graph.initializer.append(tensor)
        inits[name] = graph.initializer[-1]
        values[name] = value

    for node in list(graph.node):  # topological order: producers come first
        if node.op_type == "Identity" and const(node.input[0]) is not None:
            add_init(node.output[0], const(node.input[0]))
            graph.node.remove(node)
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            add_init(node.output[0], numpy_helper.to_array(node.attribute[0].t))
            graph.node.remove(node)
        elif node.op_type == "QuantizeLinear":
            ins = [const(n) if n else None for n in node.input]
            if len(ins) < 3 or any(v is None for v in ins):
                continue
            x, scale, zp = ins
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.size > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            info = np.iinfo(zp.dtype)
            q = np.clip(np.round(x / scale) + zp.astype(np.int32), info.min, info.max).astype(zp.dtype)
            add_init(node.output[0], q)
            graph.node.remove(node)


def _set_axis(node, axis: int) -> None:
    from onnx import helper

    for attr in list(node.attribute):
        if attr.name == "axis":
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute("axis", axis))
