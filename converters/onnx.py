"""ONNX target: fp32 from the float model, int8 as a QDQ graph of the NNCF QAT model.

Artifacts run on ONNX Runtime's CPU provider. The metadata is embedded as one JSON
string under ``metadata_props["hrnet_edge"]``. Shapes are static (batch 1), which
onnx2tf and the edge runtimes prefer; the runner loops over larger batches.
"""
from __future__ import annotations

import collections
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a model is exported, not to run one
    import torch
    from torch import nn

from converters.base import (UINT8_INPUT, AdapterRunner, Artifact, ExportJob, Runner, Target,
                             quantized_as, uint8_input_spec)
from converters.metadata import (
    EMBED_KEY, INPUT_NAME, OUTPUT_NAME, embedded_json, finish_metadata, staged_artifact,
    write_metadata,
)
from converters.onnx_fold import fold_batchnorm
from hrnet_edge.deps import require
from hrnet_edge.errors import ExportError, unknown_choice
from hrnet_edge.io import atomic_path

OPSET = 17  # onnx2tf's Resize is exact at 17 and wrong for align_corners at >= 18


def _export(model: nn.Module, path: Path, example: torch.Tensor, opset: int) -> None:
    import torch

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes cast to int
            # dynamo=False: torch 2.13 defaults to the dynamo exporter, which needs
            # onnxscript; the TorchScript exporter is the one verified for QDQ and onnx2tf.
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int],
                opset: int = OPSET) -> Path:
    """Export ``model`` to a plain ONNX file (batch 1, input ``input``, output ``output``).

    The pipeline uses this to hand an ONNX file to targets that convert from ONNX
    (TFLite). The file is written atomically.

    Args:
        model: the float PyTorch model (its train/eval mode is restored afterwards).
        path: where to write the ``.onnx`` file.
        input_size: (height, width) of the input.
        opset: ONNX opset; keep 17 for onnx2tf (see module docstring).

    Raises:
        ExportError: the exporter failed.
    """
    import torch

    path = Path(path)
    example = torch.rand(1, 3, *input_size)
    try:
        with atomic_path(path) as tmp:
            _export(model, tmp, example, opset)
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    return path


def export_qdq_onnx(qat_model: nn.Module, path: str | Path, input_size: tuple[int, int],
                    opset: int = OPSET) -> Path:
    """Export an NNCF QAT model as a QDQ ONNX (QuantizeLinear/DequantizeLinear).

    The model is first stripped to ``torch.ao`` FakeQuantize modules: the unstripped
    one exports ``org.openvinotoolkit::FakeQuantize``, which only OpenVINO reads.
    """
    import torch

    require("nncf", "qat")
    from quantization.strip import strip_native

    example = torch.rand(1, 3, *input_size)
    stripped = strip_native(qat_model, example)
    path = Path(path)
    with atomic_path(path) as tmp:
        _export(stripped, tmp, example, opset)
    return path


def read_embedded_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata embedded in an ONNX file's ``metadata_props``."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if EMBED_KEY not in props:
        raise ExportError(f"{path} carries no '{EMBED_KEY}' metadata")
    return json.loads(props[EMBED_KEY])


class OnnxTarget(Target):
    """ONNX + ONNX Runtime (CPU). fp32 from the float model; int8 as QDQ from the
    NNCF QAT model (``job.onnx_qdq_path`` if the pipeline made one, else built from
    ``job.qat_model``)."""

    name = "onnx"
    precisions = ("fp32", "int8", UINT8_INPUT)
    # onnx and onnxruntime are core dependencies; "onnx" is not a declared extra, but
    # pip installs the core dependencies for it (with a warning).
    extra = "onnx"
    suffix = ".onnx"
    modules = ("onnx", "onnxruntime")

    def export(self, job: ExportJob) -> Artifact:
        import torch

        if job.precision not in self.precisions:
            raise unknown_choice("onnx precision", job.precision, self.precisions)
        onnx = require("onnx", self.extra)
        input_size = tuple(job.model.cfg.input_size)  # type: ignore[attr-defined]
        notes: list[str] = []
        with staged_artifact(Path(job.out_dir), self.name, job.precision) as stage:
            path = stage / f"model{self.suffix}"
            if quantized_as(job.precision) == "fp32":
                _export(job.model, path, torch.rand(1, 3, *input_size), OPSET)
                quant = None
            else:
                quant = self._export_int8(job, path, input_size, notes)
            model = onnx.load(str(path))
            if quant is not None and job.options.get("fold_batchnorm", True):
                folded = fold_batchnorm(model)
                quant["batchnorm_folded_into_conv"] = folded["folded"]
                quant["batchnorm_left"] = folded["left"]
                notes.append(f"int8: {folded['folded']} BatchNorm folded into the quantized convolutions "
                             "(integer weights unchanged, per-channel scales absorb gamma/sigma) so ONNX "
                             "Runtime fuses them into QLinearConv")
            inp = None
            if job.precision == UINT8_INPUT:
                model = uint8_front(model)
                inp = uint8_input_spec(job.metadata["input"])
                notes.append("input: uint8 RGB NHWC; Transpose, Cast and x/255 run before the graph's "
                             "first QuantizeLinear, which keeps one step per grey level")
            onnx.checker.check_model(model)
            _check_runnable(model, quantized_as(job.precision))
            meta = finish_metadata(
                job.metadata, self.name, job.precision, input=inp, notes=notes,
                extra={"format": "onnx", "opset": OPSET, "quantization": quant,
                       "runtime": {"name": "onnxruntime", "provider": "CPUExecutionProvider"}},
            )
            onnx.helper.set_model_props(model, {EMBED_KEY: embedded_json(meta)})
            onnx.save(model, str(path))
            write_metadata(stage, meta, path)
        final = Path(job.out_dir) / path.name
        return Artifact(self.name, job.precision, final, Path(job.out_dir) / "metadata.json", notes)

    def _export_int8(self, job: ExportJob, path: Path, input_size, notes: list[str]) -> dict:
        if job.onnx_qdq_path is not None:
            shutil.copyfile(job.onnx_qdq_path, path)
            notes.append("int8: QDQ ONNX handed over by the pipeline (NNCF QAT, stripped)")
        elif job.qat_model is not None:
            export_qdq_onnx(job.qat_model, path, input_size)
            notes.append("int8: QDQ ONNX of the NNCF QAT model stripped to torch.ao FakeQuantize")
        else:
            raise ExportError(
                f"onnx {job.precision} needs the NNCF QAT model (job.qat_model) or a QDQ ONNX "
                "(job.onnx_qdq_path); run quantization first or export fp32"
            )
        return {"source": "nncf_qat", "format": "QDQ (QuantizeLinear/DequantizeLinear)",
                "activations": "int8/uint8 per tensor", "weights": "int8 (NNCF scheme)"}

    def load(self, artifact_dir: Path, threads: int = 2) -> Runner:
        require("onnxruntime", self.extra)
        return AdapterRunner(Path(artifact_dir), threads)  # the device runtime's adapter

    def inspect(self, artifact_dir: Path) -> dict[str, Any]:
        onnx = require("onnx", self.extra)
        path = Path(artifact_dir) / f"model{self.suffix}"
        model = onnx.load(str(path))
        ops = collections.Counter(n.op_type for n in model.graph.node)
        return {
            "op_counts": dict(sorted(ops.items())),
            "num_nodes": len(model.graph.node),
            "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "inputs": [_value_info(onnx, v) for v in model.graph.input],
            "outputs": [_value_info(onnx, v) for v in model.graph.output],
            "quantize_linear": ops.get("QuantizeLinear", 0),
            "dequantize_linear": ops.get("DequantizeLinear", 0),
            "embedded_metadata": any(p.key == EMBED_KEY for p in model.metadata_props),
            "metadata_json": (Path(artifact_dir) / "metadata.json").exists(),
            "runtime_graph": _runtime_ops(path),
        }


def _runtime_ops(path: Path) -> dict[str, Any]:
    """What ONNX Runtime runs after its graph optimizations: integer convolutions
    (``QLinearConv``, or ``ConvInteger``) against convolutions left in float."""
    ort = require("onnxruntime", "onnx")
    onnx = require("onnx", "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    return {"integer_convs": ops.get("QLinearConv", 0) + ops.get("ConvInteger", 0),
            "float_convs": ops.get("Conv", 0) + ops.get("FusedConv", 0),
            "op_counts": dict(sorted(ops.items()))}


def uint8_front(model):
    """``model`` (float NCHW input) taking uint8 RGB NHWC instead, under the same input
    name: a Transpose, a Cast and a multiplication by 1/255 in front of the graph."""
    onnx = require("onnx", "onnx")
    h, graph = onnx.helper, model.graph
    old = graph.input[0]
    name = old.name
    n, c, hh, ww = (d.dim_value for d in old.type.tensor_type.shape.dim)
    for node in graph.node:  # what read the float input reads the 0..1 tensor now
        node.input[:] = [f"{name}_01" if i == name else i for i in node.input]
    front = [h.make_node("Transpose", [name], [f"{name}_nchw"], perm=[0, 3, 1, 2]),
             h.make_node("Cast", [f"{name}_nchw"], [f"{name}_float"], to=onnx.TensorProto.FLOAT),
             h.make_node("Mul", [f"{name}_float", f"{name}_inv255"], [f"{name}_01"])]
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(1 / 255, np.float32), f"{name}_inv255"))
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend(front + kept)
    graph.input.remove(old)
    graph.input.insert(0, h.make_tensor_value_info(name, onnx.TensorProto.UINT8, [n, hh, ww, c]))
    return model


def _check_runnable(model, precision: str) -> None:
    """Refuse graphs ONNX Runtime cannot run or that are not what was asked for."""
    custom = sorted({n.domain for n in model.graph.node} - {"", "ai.onnx", "com.microsoft"})
    if custom:  # e.g. an unstripped NNCF model exports org.openvinotoolkit::FakeQuantize
        raise ExportError(f"onnx {precision}: nodes of domain(s) {custom}, which ONNX Runtime "
                          "cannot run; strip the NNCF model to torch.ao FakeQuantize first")
    if precision == "int8" and not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise ExportError("onnx int8: the graph has no QuantizeLinear; the QAT model carries no quantizers")


def _value_info(onnx, v) -> dict[str, Any]:
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in v.type.tensor_type.shape.dim]
    dtype = onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()
    return {"name": v.name, "shape": dims, "dtype": dtype}
