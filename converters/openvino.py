"""OpenVINO target: an IR (``model.xml`` + ``model.bin``) run by the CPU plugin.

Precisions:

* ``fp32``: FP32 weights (``save_model(compress_to_fp16=False)``; the default is True).
* ``fp16``: FP16 weights (``compress_to_fp16=True``); the CPU plugin decompresses them.
* ``bf16``: the FP32 IR run with ``INFERENCE_PRECISION_HINT=bf16``. On CPUs with BF16
  units (avx512_bf16, AMX) the CPU plugin picks bf16 by itself; elsewhere the plugin
  silently falls back to f32, which the runner records (``inference_precision``).
* ``int8``: the unstripped NNCF QAT model converted directly, which keeps NNCF's
  quantizers as FakeQuantize ops that the plugin runs in INT8.

The runner pins ``INFERENCE_PRECISION_HINT`` to f32 for fp32/fp16/int8, because a CPU
with BF16 units otherwise runs those in bf16 and parity with PyTorch is lost
(3.5e-3 instead of 1.5e-7 on a test net, TOOLCHAIN.md). The metadata is embedded in
the IR's ``rt_info`` under ``hrnet_edge/metadata`` as one JSON string.
"""
from __future__ import annotations

import collections
import json
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a model is exported, not to run one
    import torch

from converters.base import (UINT8_INPUT, AdapterRunner, Artifact, ExportJob, Runner, Target,
                             quantized_as, uint8_input_spec)
from converters.metadata import (
    EMBED_KEY, INPUT_NAME, OUTPUT_NAME, embedded_json, finish_metadata, staged_artifact,
    write_metadata,
)
from hrnet_edge.deps import require
from hrnet_edge.errors import ExportError, unknown_choice

RT_INFO_PATH = [EMBED_KEY, "metadata"]
# The inference precision hint per artifact precision, written into metadata.json: the
# device runtime compiles with it (CPUs with BF16 units otherwise run fp32 IRs in bf16).
RUN_HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16", UINT8_INPUT: "f32"}


def _convert(model: torch.nn.Module, input_size: tuple[int, int]):
    """ov.convert_model by tracing, with the model in eval mode (restored after)."""
    import torch

    ov = require("openvino", "openvino")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # OpenVINO's PyTorch frontend traces with torch.jit.trace, which torch 2.13
            # deprecates; NNCF models also trip the trace checker by a rounding step.
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(model, example_input=torch.rand(1, 3, *input_size))
    finally:
        model.train(was_training)
    # Tracing leaves every dimension dynamic; a static batch-1 shape is what the
    # metadata promises and lets the CPU plugin plan memory once.
    ov_model.reshape([1, 3, *input_size])
    # Traced models carry no tensor names; give the app the names the metadata uses.
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    return ov_model


# The last float conversion per model object: fp32, fp16 and bf16 save the same traced
# graph (they differ in how it is saved or compiled), so one trace serves the three
# exports of a run; each export works on its own clone.
_FLOAT_IR: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _float_conversion(model: torch.nn.Module, input_size: tuple[int, int]):
    """:func:`_convert` of a float model, traced once per model and input size."""
    hit = _FLOAT_IR.get(model)
    if hit is None or hit[0] != tuple(input_size):
        hit = (tuple(input_size), _convert(model, input_size))
        _FLOAT_IR[model] = hit
    return hit[1]


def _host_has_bf16() -> bool:
    ov = require("openvino", "openvino")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def read_embedded_metadata(xml_path: str | Path) -> dict[str, Any]:
    """The metadata embedded in an IR's ``rt_info``."""
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(xml_path))
    if not model.has_rt_info(RT_INFO_PATH):
        raise ExportError(f"{xml_path} carries no '{'/'.join(RT_INFO_PATH)}' rt_info")
    return json.loads(model.get_rt_info(RT_INFO_PATH).astype(str))


class OpenVinoTarget(Target):
    """OpenVINO IR on the CPU plugin: fp32, fp16 (weights), bf16 (hint), int8 (NNCF)."""

    name = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8", UINT8_INPUT)
    extra = "openvino"
    suffix = ".xml"
    modules = ("openvino",)

    def export(self, job: ExportJob) -> Artifact:
        if job.precision not in self.precisions:
            raise unknown_choice("openvino precision", job.precision, self.precisions)
        ov = require("openvino", self.extra)
        input_size = tuple(job.model.cfg.input_size)  # type: ignore[attr-defined]
        notes = self._notes(job.precision)
        with staged_artifact(Path(job.out_dir), self.name, job.precision) as stage:
            if quantized_as(job.precision) == "int8":
                if job.qat_model is None:
                    raise ExportError(f"openvino {job.precision} needs the NNCF QAT model (job.qat_model); "
                                      "run quantization first or export fp32/fp16/bf16")
                ov_model = _convert(job.qat_model, input_size)
            else:
                ov_model = _float_conversion(job.model, input_size).clone()
            inp = None
            if job.precision == UINT8_INPUT:
                ov_model = _uint8_front(ov, ov_model)
                inp = uint8_input_spec(job.metadata["input"])
            ops = collections.Counter(op.get_type_name() for op in ov_model.get_ops())
            meta = finish_metadata(job.metadata, self.name, job.precision, input=inp, notes=notes,
                                   extra=self._extra(job.precision, ops))
            ov_model.set_rt_info(embedded_json(meta), RT_INFO_PATH)
            xml = stage / f"model{self.suffix}"
            ov.save_model(ov_model, str(xml), compress_to_fp16=job.precision == "fp16")
            write_metadata(stage, meta, xml, companions=[xml.with_suffix(".bin")])
        out = Path(job.out_dir)
        return Artifact(self.name, job.precision, out / xml.name, out / "metadata.json", notes)

    @staticmethod
    def _extra(precision: str, ops: collections.Counter) -> dict[str, Any]:
        weights = {"fp32": "f32", "bf16": "f32", "fp16": "f16", "int8": "i8 (NNCF QAT)"}[quantized_as(precision)]
        extra: dict[str, Any] = {
            "format": "openvino_ir",
            "files": ["model.xml", "model.bin"],
            "weights_precision": weights,
            "runtime": {"device": "CPU", "INFERENCE_PRECISION_HINT": RUN_HINTS[precision],
                        "PERFORMANCE_HINT": "LATENCY"},
        }
        if quantized_as(precision) == "int8":
            extra["quantization"] = {"source": "nncf_qat", "format": "FakeQuantize",
                                     "fake_quantize_ops": ops.get("FakeQuantize", 0)}
        return extra

    @staticmethod
    def _notes(precision: str) -> list[str]:
        if precision == "bf16":
            return [
                "bf16: the FP32 IR compiled with INFERENCE_PRECISION_HINT=bf16; the CPU "
                "plugin's default on CPUs with BF16 units (avx512_bf16/AMX); elsewhere it "
                "falls back to f32",
                f"export host has BF16 units: {_host_has_bf16()}",
            ]
        if precision == "fp16":
            return ["fp16 weights; compute precision follows INFERENCE_PRECISION_HINT "
                    "(f32 for the parity check)"]
        notes = ["compile with INFERENCE_PRECISION_HINT=f32 to match PyTorch: CPUs with BF16 "
                 "units otherwise run in bf16"]
        if precision == UINT8_INPUT:
            notes.append("input: uint8 RGB NHWC; the IR's preprocessing (PrePostProcessor) converts to "
                         "f32, divides by 255 and transposes to NCHW before the first FakeQuantize")
        return notes

    def load(self, artifact_dir: Path, threads: int = 2) -> Runner:
        """Compile the IR through the device runtime's adapter, with the precision hint
        its metadata gives (as on a device)."""
        require("openvino", self.extra)
        return AdapterRunner(Path(artifact_dir), threads)

    def inspect(self, artifact_dir: Path) -> dict[str, Any]:
        ov = require("openvino", self.extra)
        model = ov.Core().read_model(str(Path(artifact_dir) / f"model{self.suffix}"))
        ops = collections.Counter(op.get_type_name() for op in model.get_ops())
        consts = collections.Counter(
            op.get_output_element_type(0).get_type_name() for op in model.get_ops()
            if op.get_type_name() == "Constant"
        )
        return {
            "op_counts": dict(sorted(ops.items())),
            "fake_quantize": ops.get("FakeQuantize", 0),
            "constant_types": dict(sorted(consts.items())),
            "inputs": [_port(p) for p in model.inputs],
            "outputs": [_port(p) for p in model.outputs],
            "embedded_metadata": model.has_rt_info(RT_INFO_PATH),
            "metadata_json": (Path(artifact_dir) / "metadata.json").exists(),
        }


def _uint8_front(ov, ov_model):
    """The IR taking uint8 RGB NHWC: preprocessing steps saved inside the model."""
    ppp = ov.preprocess.PrePostProcessor(ov_model)
    inp = ppp.input(0)
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    inp.model().set_layout(ov.Layout("NCHW"))
    inp.preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    return ppp.build()


def _port(port) -> dict[str, Any]:
    shape = [d.get_length() if d.is_static else str(d) for d in port.get_partial_shape()]
    return {"name": port.get_any_name(), "shape": shape,
            "dtype": port.get_element_type().get_type_name()}
