"""ExecuTorch target: a ``.pte`` program lowered to the XNNPACK delegate.

FP32: ``torch.export`` -> ``to_edge_transform_and_lower`` (XnnpackPartitioner, the
XNNPACK transform passes) -> ``to_executorch``. INT8: PT2E post-training quantization
with ``XNNPACKQuantizer`` (weights symmetric per channel, activations per tensor),
calibrated on the job's training images, then the same lowering. An NNCF QAT model
cannot go through ``torch.export`` (see docs/TOOLCHAIN.md), so INT8 starts from the
QAT-fine-tuned *float* weights when the pipeline hands them over.

XNNPACK does not take every op: ``upsample_nearest2d`` (HRNetV1's fuse layers) falls
back to ExecuTorch's portable CPU kernels and splits the graph into several delegate
partitions. The export counts delegated vs non-delegated nodes and records them in
``metadata.json``; :meth:`ExecuTorchTarget.inspect` reads the same facts back.
"""
from __future__ import annotations

import copy
import importlib.metadata as _md
import json
import operator
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from converters.base import (FLOAT_NCHW, UINT8_INPUT, UINT8_NHWC, AdapterRunner, Artifact, ExportJob, Runner, Target,
                             delegation_notes, quantized_as, to_uint8_nhwc, uint8_input_spec)
from hrnet_edge.deps import require
from hrnet_edge.errors import ExportError, HRNetEdgeError, unknown_choice
from converters.metadata import TIMINGS_FILE
from hrnet_edge.io import atomic_path, read_json, sha256_file, size_bytes, write_json

MODEL_FILE = "model.pte"
# A constant method of the program that returns the metadata as a JSON string, so a
# .pte carries its own description (the format has no free-form metadata table).
METADATA_METHOD = "hrnet_edge_metadata"
CALIBRATION_BATCH = 16
_TOOLS = ("hrnet-edge", "torch", "numpy", "executorch", "torchao")
# ExecuTorch ScalarType codes (executorch/exir/scalar_type.py) for the I/O we expect.
_SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16",
                 6: "float32", 7: "float64", 11: "bool", 15: "bfloat16"}


class ExecuTorchTarget(Target):
    """ExecuTorch ``.pte`` with the XNNPACK delegate (FP32 and PT2E INT8)."""

    name = "executorch"
    precisions = ("fp32", "int8", UINT8_INPUT)
    extra = "executorch"
    suffix = ".pte"
    modules = ("executorch.exir", "executorch.runtime")
    runtime_modules = ("executorch.runtime",)  # exir imports torch and torchao: ~6 s a check

    def export(self, job: ExportJob) -> Artifact:
        """Export, lower to XNNPACK and write ``model.pte`` + ``metadata.json`` atomically.

        Raises:
            ConfigError: unknown precision.
            MissingDependency: executorch (or torchao for INT8) is not installed.
            ExportError: export, quantization or lowering failed; nothing is written.
        """
        if job.precision not in self.precisions:
            raise unknown_choice("executorch precision", job.precision, self.precisions)
        require("executorch.exir", self.extra)
        model, source = _source_model(job)
        cfg = model.cfg
        meta = _start_metadata(job, source)
        try:
            program, timings = _build_program(model, job, meta)
            meta["delegation"] = program["delegation"]
            meta["notes"].extend(_fallback_notes(program["delegation"]))
            with atomic_path(job.out_dir) as stage:
                stage.mkdir(parents=True)
                model_path = stage / MODEL_FILE
                model_path.write_bytes(program["buffer"])
                meta["artifact"] = {"file": MODEL_FILE, "size_bytes": size_bytes(model_path),
                                    "sha256": sha256_file(model_path)}
                write_json(stage / "metadata.json", meta)
                # times vary per run: beside the artifact, not in its metadata (same inputs, same bytes)
                write_json(stage / TIMINGS_FILE, {"export_seconds": timings})
        except HRNetEdgeError:
            raise
        except Exception as exc:  # any backend failure becomes one typed error
            raise ExportError(
                f"executorch {job.precision} export of {cfg.name} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return Artifact(self.name, job.precision, job.out_dir / MODEL_FILE,
                        job.out_dir / "metadata.json", notes=list(meta["notes"]))

    def load(self, artifact_dir: Path, threads: int = 2) -> Runner:
        require("executorch.runtime", self.extra)
        if (Path(artifact_dir) / "metadata.json").is_file():  # an export: the device runtime's code
            return AdapterRunner(Path(artifact_dir), threads)
        return ExecuTorchRunner(Path(artifact_dir) / MODEL_FILE, threads)

    def inspect(self, artifact_dir: Path) -> dict[str, Any]:
        """Facts read from the ``.pte`` itself (methods, I/O specs, kernel ops run
        outside any delegate, delegate calls) plus the export-time node counts
        recorded in ``metadata.json``."""
        artifact_dir = Path(artifact_dir)
        facts = inspect_pte(artifact_dir / MODEL_FILE)
        meta_path = artifact_dir / "metadata.json"
        if meta_path.is_file():
            meta = read_json(meta_path)
            facts["delegation"] = meta.get("delegation", {})
            facts["quantization"] = meta.get("quantization")
        return facts


class ExecuTorchRunner(Runner):
    """Runs the ``forward`` method of a ``.pte`` through the ExecuTorch runtime."""

    def __init__(self, path: Path, threads: int = 2):
        from executorch.runtime import Runtime

        self.set_threads(threads)
        self.program = Runtime.get().load_program(str(path))
        self.method = self.program.load_method("forward")
        # The program was exported with a static batch; bigger batches are split.
        first = self.method.metadata.input_tensor_meta(0)
        self.batch = int(first.sizes()[0])
        self.input_form = UINT8_NHWC if _SCALAR_TYPES.get(int(first.dtype())) == "uint8" else FLOAT_NCHW

    def run(self, x: np.ndarray) -> np.ndarray:
        import torch

        outs = []
        for i in range(0, x.shape[0], self.batch):
            chunk = torch.from_numpy(x[i:i + self.batch])
            # The runtime may reuse its output buffer on the next call: copy it out.
            outs.append(self.method.execute([chunk])[0].detach().numpy().copy())
        return np.concatenate(outs, axis=0)

    def set_threads(self, n: int) -> None:
        """Resize XNNPACK's thread pool (process-wide, an experimental binding)."""
        try:
            from executorch.extension.pybindings import portable_lib
        except ImportError:  # pragma: no cover - runtime without pybindings
            return
        reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        if reset is not None and n > 0:
            reset(int(n))


def _source_model(job: ExportJob):
    """The model to export and where its weights came from ("fp32" or "qat")."""
    if quantized_as(job.precision) == "int8" and job.qat_float_model is not None:
        model, source = job.qat_float_model, "qat"
    else:
        model, source = job.model, "fp32"
    if model.training:  # export must see eval-mode BatchNorm; never flip the caller's module
        model = copy.deepcopy(model).eval()
    return model, source


def _build_program(model, job: ExportJob, meta: dict[str, Any]):
    """Export (and quantize), lower to XNNPACK; return the program and timings.

    Sets ``meta["quantization"]`` before lowering so the embedded copy carries it.
    """
    import torch

    from hrnet_edge.models.blocks import upsample_form
    from hrnet_edge.models.heads import per_level_predictors

    h, w = model.cfg.input_size
    u8 = job.precision == UINT8_INPUT
    example = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8) if u8 else torch.rand(1, 3, h, w)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    form = str(job.options.get("upsample_form", "interpolate"))
    with torch.no_grad(), upsample_form(model, form) as n_up, per_level_predictors(model) as n_heads:
        meta["upsample_form"] = {"form": form, "modules": n_up}
        if n_heads:  # detection: XNNPACK compiles no int8 conv shared by inputs of different scales
            meta["predictors"] = ("one copy of the shared box/centerness/class convolutions per pyramid "
                                  "level (same weights)")
        if quantized_as(job.precision) == "int8":
            carry_from = job.qat_model if meta["source_model"] == "qat" and job.options.get("carry_qat_ranges", True) else None
            ep, quant = _quantize_pt2e(Uint8Front(model) if u8 else model, example, job.calibration,
                                       meta["source_model"],
                                       int(job.options.get("calibration_batch", CALIBRATION_BATCH)),
                                       carry_from=carry_from)
            timings["quantize"] = round(time.perf_counter() - t0, 2)
        else:
            ep, quant = torch.export.export(model, (example,)), None
    meta["quantization"] = quant
    t1 = time.perf_counter()
    program = lower_to_xnnpack(ep, embedded=json.dumps(meta, sort_keys=True, separators=(",", ":")))
    timings["lower"] = round(time.perf_counter() - t1, 2)
    timings["total"] = round(time.perf_counter() - t0, 2)
    return program, timings


def _quantize_pt2e(model, example, calibration: np.ndarray | None, source: str,
                   batch: int = CALIBRATION_BATCH, carry_from=None):
    """PT2E quantization for XNNPACK; returns an ExportedProgram and its facts.

    With ``carry_from`` (the NNCF QAT model ``model`` was stripped from), every
    activation observer that reads a tensor QAT quantized takes QAT's learned range
    (:func:`quantization.carry.carry_qat_ranges`); the others keep their calibration.

    Calibration runs on a copy exported with a dynamic batch: the default activation
    observer (HistogramObserver) costs about the same per call whatever the batch,
    so batches of 16 calibrate ~15x faster than one image at a time.
    """
    import torch

    require("torchao", "executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )
    # torch.ao.quantization.quantize_pt2e is gone in torch 2.13: PT2E lives in torchao.
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    u8 = example.dtype == torch.uint8
    images = _check_calibration(calibration, tuple(example.shape[1:]) if not u8 else
                                (3, *example.shape[1:3]))
    if u8:  # the uint8 front takes the pixels the float images came from
        images = to_uint8_nhwc(images)
    batch = max(1, min(batch, len(images)))
    # Trace with batch 2: an example batch of 1 would specialise the dimension to 1.
    dyn = ({0: torch.export.Dim("batch", min=1, max=max(2, batch))},)
    graph = torch.export.export(model, (example.expand(2, -1, -1, -1).clone(),),
                                dynamic_shapes=dyn).module()
    config = _weight_scale_floor(get_symmetric_quantization_config(is_per_channel=True))
    quantizer = XNNPACKQuantizer().set_global(config)
    prepared = prepare_pt2e(graph, quantizer)
    for i in range(0, len(images), batch):
        prepared(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])))
    carried = None
    if carry_from is not None:
        from quantization.carry import carry_qat_ranges

        probe = torch.from_numpy(np.ascontiguousarray(images[:2]))
        qat_probe = probe.permute(0, 3, 1, 2).float() / 255 if u8 else probe
        carried = carry_qat_ranges(prepared, carry_from, qat_probe, prepared_images=probe)
    converted = convert_pt2e(prepared)
    method = (f"PT2E with the activation ranges NNCF QAT learned ({carried.carried} observers); "
              f"{carried.calibrated} observers calibrated on {len(images)} images"
              if carried is not None else f"PT2E post-training quantization calibrated on {len(images)} images")
    facts = {
        "method": method,
        "quantizer": "executorch XNNPACKQuantizer, get_symmetric_quantization_config(is_per_channel=True)",
        "weights": "int8 symmetric per output channel",
        "activations": "int8 per tensor, affine (histogram observer)",
        "calibration_images": len(images),
        "weights_source": "qat_float_model (QAT-fine-tuned float weights)" if source == "qat"
        else "model (float weights)",
        "io": ("uint8 RGB NHWC in (cast, /255 and permute in the graph, then quantize), float32 out"
               if u8 else "float32 in and out; quantize/dequantize run inside the graph"),
    }
    if carried is not None:
        facts.update(carried.facts())
    # The deployed program has the static batch of 1 that the float export has.
    return torch.export.export(converted, (example,)), facts


# The smallest per-channel weight scale. The XNNPACK quantizer's default observer floors
# it at 2**-12, coarser than the folded weights of some detection-head convolutions
# need: BatchNorm folding leaves channels whose largest weight is under 2**-12 x 127 =
# 0.031, and 5 convolutions of the detection default had every channel at the floor,
# some rounded to a few dozen levels. That alone took PT2E INT8 from 0.384 to 0.340 box
# AP (the converted program run in Python). XNNPACK takes the finer scales (the
# requantization scale input x weight / output stays far inside its range).
WEIGHT_SCALE_FLOOR = 2.0**-24


def _weight_scale_floor(config):
    """``config`` with its weight observer's scale floor at :data:`WEIGHT_SCALE_FLOOR`."""
    import dataclasses

    from torchao.quantization.pt2e.observer import PerChannelMinMaxObserver

    if config.weight is None:
        return config
    spec = dataclasses.replace(config.weight,
                               observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=WEIGHT_SCALE_FLOOR))
    return dataclasses.replace(config, weight=spec)


def Uint8Front(model):  # noqa: N802 - builds a module, reads like a class
    """``model`` behind a front that takes uint8 RGB NHWC: cast, /255, permute to NCHW."""
    import torch

    class _Front(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.cfg = inner, inner.cfg

        def forward(self, x):
            # cast first: XNNPACK takes a float permute, not a uint8 one
            return self.inner(x.to(torch.float32).permute(0, 3, 1, 2) / 255.0)

    return _Front(model)


def _check_calibration(calibration: np.ndarray | None, chw: tuple[int, ...]) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise ExportError("executorch int8 needs calibration images (job.calibration), got none")
    images = np.asarray(calibration)
    if images.ndim != 4 or tuple(images.shape[1:]) != chw:
        raise ExportError(
            f"calibration images must be N x {' x '.join(map(str, chw))} (NCHW float32 in 0..1), "
            f"got shape {tuple(images.shape)}"
        )
    return images


def lower_to_xnnpack(ep, embedded: str | None = None) -> dict[str, Any]:
    """Lower an ExportedProgram to an XNNPACK-delegated ExecuTorch program.

    Args:
        ep: the program from ``torch.export.export`` (float or PT2E-quantized).
        embedded: a string stored as the constant method ``hrnet_edge_metadata``.

    Returns:
        ``{"buffer": bytes of the .pte, "delegation": node counts}``.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.configs import get_transform_passes
    from executorch.exir import to_edge_transform_and_lower

    methods = {METADATA_METHOD: embedded} if embedded is not None else None
    edge = to_edge_transform_and_lower(
        ep, partitioner=[XnnpackPartitioner()], transform_passes=get_transform_passes(),
        constant_methods=methods,
    )
    delegation = delegation_counts(edge.exported_program().graph_module)
    return {"buffer": edge.to_executorch().buffer, "delegation": delegation}


def delegation_counts(graph_module) -> dict[str, Any]:
    """Count the ops inside XNNPACK partitions and those left to portable kernels.

    ``getitem`` nodes (tuple plumbing around delegate calls) are not ops and are
    not counted.
    """
    delegated: Counter[str] = Counter()
    fallback: Counter[str] = Counter()
    partitions = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            partitions += 1
            lowered = getattr(graph_module, node.target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and inner.target is not operator.getitem:
                    delegated[_op_name(inner.target)] += 1
        elif node.op == "call_function" and node.target is not operator.getitem:
            name = _op_name(node.target)
            if name != "executorch_call_delegate":
                fallback[name] += 1
    return {
        "backend": "XnnpackBackend",
        "partitions": partitions,
        "delegated_nodes": sum(delegated.values()),
        "non_delegated_nodes": sum(fallback.values()),
        "delegated_ops": dict(sorted(delegated.items())),
        "non_delegated_ops": dict(sorted(fallback.items())),
    }


def _op_name(target) -> str:
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return str(target)  # "aten.convolution.default"
    # Edge dialect ops name themselves "aten.convolution.default" in __name__.
    return getattr(target, "__name__", str(target))


def inspect_pte(path: Path) -> dict[str, Any]:
    """Read a ``.pte`` without running it: methods, forward's I/O, kernel ops, delegates."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    path = Path(path)
    program = deserialize_pte_binary(path.read_bytes()).program
    plans = {plan.name: plan for plan in program.execution_plan}
    if "forward" not in plans:
        raise ExportError(f"{path} has no 'forward' method (methods: {sorted(plans)})")
    plan = plans["forward"]
    kernels: Counter[str] = Counter()
    delegate_calls: Counter[str] = Counter()
    for chain in plan.chains:
        for instr in chain.instructions:
            kind = type(instr.instr_args).__name__
            if kind == "KernelCall":
                op = plan.operators[instr.instr_args.op_index]
                kernels[f"{op.name}.{op.overload}" if op.overload else op.name] += 1
            elif kind == "DelegateCall":
                delegate_calls[plan.delegates[instr.instr_args.delegate_index].id] += 1
    facts: dict[str, Any] = {
        "format": "executorch_pte",
        "size_bytes": size_bytes(path),
        "methods": sorted(plans),
        "inputs": [_tensor_spec(plan.values[i].val) for i in plan.inputs],
        "outputs": [_tensor_spec(plan.values[i].val) for i in plan.outputs],
        "delegate_calls": dict(delegate_calls),
        "kernel_calls": dict(sorted(kernels.items())),
    }
    if METADATA_METHOD in plans:
        facts["embedded_metadata"] = _embedded_string(plans[METADATA_METHOD])
    return facts


def _tensor_spec(val) -> dict[str, Any]:
    sizes = getattr(val, "sizes", None)
    if sizes is None:
        return {"kind": type(val).__name__}
    code = int(val.scalar_type)
    return {"shape": list(sizes), "dtype": _SCALAR_TYPES.get(code, f"scalar_type_{code}")}


def _embedded_string(plan) -> dict[str, Any] | None:
    """The JSON returned by the metadata constant method, parsed (None when absent)."""
    for idx in plan.outputs:
        text = getattr(plan.values[idx].val, "string_val", None)
        if text is not None:
            return json.loads(text)
    return None


def _start_metadata(job: ExportJob, source: str) -> dict[str, Any]:
    """The job's base metadata plus this target's fields (before the export facts)."""
    meta = json.loads(json.dumps(job.metadata, default=str))  # a deep, JSON-only copy
    meta.update(target="executorch", precision=job.precision, format="executorch_pte",
                source_model=source)
    meta["input"] = {**meta.get("input", {}), "layout": "NCHW", "dtype": "float32"}
    if job.precision == UINT8_INPUT:
        meta["input"] = uint8_input_spec(meta["input"])
    meta["output"] = {**meta.get("output", {}), "dtype": "float32"}
    meta["runtime"] = {
        "backend": "XNNPACK delegate (CPU), portable kernels for ops XNNPACK does not take",
        "method": "forward",
        "embedded_metadata": f"constant method '{METADATA_METHOD}' returns this JSON "
                             "(without the export facts: delegation, timings, artifact hash)",
    }
    notes = list(meta.get("notes", []))
    notes.append("input is uint8 RGB NHWC (0..255) with a static batch of 1; the cast, /255 and "
                 "normalization run inside the graph" if job.precision == UINT8_INPUT else
                 "input is NCHW float32 RGB in 0..1 with a static batch of 1; "
                 "normalization runs inside the graph")
    if quantized_as(job.precision) == "int8":
        notes.append("INT8 via PT2E post-training quantization (XNNPACKQuantizer) starting from "
                     + ("the QAT-fine-tuned float weights" if source == "qat" else "the float model")
                     + "; NNCF's own quantizers cannot pass torch.export")
    meta["notes"] = notes
    meta["tool_versions"] = _tool_versions()
    # no export time inside the artifact: the same inputs give the same bytes (the
    # export's time is in exports/index.json)
    return meta


def _fallback_notes(delegation: dict[str, Any]) -> list[str]:
    """A note naming the ops XNNPACK left to portable kernels, if any."""
    return delegation_notes(delegation.get("non_delegated_ops", {}), delegation.get("partitions", 0),
                            "portable CPU", ("upsample_nearest",))


def _tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _TOOLS:
        try:
            versions[dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            continue
    return versions
