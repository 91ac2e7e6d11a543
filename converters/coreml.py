"""Core ML target: an ML Program (``.mlpackage``) for iOS 17 / macOS 14 and later.

Conversion goes through ``torch.export`` + ``run_decompositions({})``: coremltools 9
refuses the training dialect that ``torch.export`` returns, and its TorchScript path
fails with torch 2.13 / numpy >= 2.4 (docs/TOOLCHAIN.md). FP16 and FP32 set the
compute precision; INT8 is **weight-only** (``linear_quantize_weights``, symmetric per
output channel) on top of the FP16 program, so activations stay FP16.

The input is an image (``ImageType``, RGB, scale 1/255) when the model normalizes in
its graph: Core ML multiplies the 0..255 pixels by 1/255 and the graph applies
mean/std, so an app hands over a ``CVPixelBuffer`` (or a Vision request) as is. With
``job.options["coreml_input"] = "tensor"`` (or a model that expects normalized
input) it is a float32 NCHW ``MLMultiArray`` in 0..1 instead.

``MLModel.predict`` exists only on macOS: on Linux the artifact is checked
structurally (:meth:`CoreMLTarget.inspect`) and its numerics stay unchecked.
"""
from __future__ import annotations

import copy
import importlib.metadata as _md
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from converters.base import Artifact, ExportJob, Runner, Target
from hrnet_edge.deps import require
from hrnet_edge.errors import ExportError, HRNetEdgeError, unknown_choice
from converters.metadata import TIMINGS_FILE
from hrnet_edge.io import atomic_path, read_json, sha256_file, size_bytes, write_json

MODEL_FILE = "model.mlpackage"
EMBED_KEY = "hrnet_edge"  # user_defined_metadata key holding the metadata JSON
INPUT_KINDS = ("image", "tensor")
# Weights with fewer elements stay FP16 under linear_quantize_weights (its default):
# for a small HRNet that is the stem, the head and most 1x1 convs of narrow branches.
WEIGHT_THRESHOLD = 2048
_TOOLS = ("hrnet-edge", "torch", "numpy", "coremltools")
_NOT_MACOS = ("Core ML runs only on macOS: MLModel.predict needs libcoremlpython, which "
              "coremltools ships for macOS only; on this host the artifact is checked "
              "structurally (spec, MIL ops, weights, size) and its numerics are unchecked")


class CoreMLTarget(Target):
    """Core ML ML Program, FP16 / FP32 compute or INT8 weight-only."""

    name = "coreml"
    precisions = ("fp16", "fp32", "int8")
    extra = "coreml"
    suffix = ".mlpackage"
    modules = ("coremltools",)

    def runnable(self) -> tuple[bool, str]:
        if sys.platform != "darwin":
            return False, _NOT_MACOS
        return self.available()

    def export(self, job: ExportJob) -> Artifact:
        """Convert, (weight-)quantize, embed metadata; write the package atomically.

        Raises:
            ConfigError: unknown precision or ``coreml_input`` option.
            MissingDependency: coremltools is not installed.
            ExportError: conversion failed; nothing is written.
        """
        if job.precision not in self.precisions:
            raise unknown_choice("coreml precision", job.precision, self.precisions)
        kind = str(job.options.get("coreml_input", "image"))
        if kind not in INPUT_KINDS:
            raise unknown_choice("coreml_input option", kind, INPUT_KINDS)
        require("coremltools", self.extra)
        model, source = _source_model(job)
        if not model.cfg.normalize_in_graph:
            kind = "tensor"  # ImageType has one scalar scale: it cannot hold a per-channel std
        try:
            t0 = time.perf_counter()
            mlmodel, names = _convert(model, job.precision, kind, job.metadata)
            meta = _metadata(job, source, kind, names, mlmodel)
            _describe(mlmodel, meta, names)
            with atomic_path(job.out_dir) as stage:
                stage.mkdir(parents=True)
                package = stage / MODEL_FILE
                mlmodel.save(str(package))
                make_reproducible(package)
                meta["artifact"] = {"file": MODEL_FILE, "size_bytes": size_bytes(package),
                                    "sha256": sha256_file(package)}
                write_json(stage / "metadata.json", meta)
                # times vary per run: beside the artifact, not in its metadata
                write_json(stage / TIMINGS_FILE, {"export_seconds": round(time.perf_counter() - t0, 2)})
        except HRNetEdgeError:
            raise
        except Exception as exc:  # any converter failure becomes one typed error
            raise ExportError(
                f"coreml {job.precision} export of {model.cfg.name} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return Artifact(self.name, job.precision, job.out_dir / MODEL_FILE,
                        job.out_dir / "metadata.json", notes=list(meta["notes"]))

    def load(self, artifact_dir: Path, threads: int = 2) -> Runner:
        ok, reason = self.runnable()
        if not ok:
            raise HRNetEdgeError(reason)
        return CoreMLRunner(Path(artifact_dir))

    def inspect(self, artifact_dir: Path) -> dict[str, Any]:
        """What Linux can check: spec type, I/O from the spec, MIL op counts,
        quantized weight ops, embedded metadata keys, package size."""
        ct = require("coremltools", self.extra)
        package = Path(artifact_dir) / MODEL_FILE
        spec = ct.utils.load_spec(str(package))
        ops = mil_op_counts(spec)
        quantized = {k: v for k, v in ops.items() if k.startswith("constexpr_")}
        return {
            "format": "coreml_mlpackage",
            "spec_type": spec.WhichOneof("Type"),
            "specification_version": spec.specificationVersion,
            "inputs": [_feature(f) for f in spec.description.input],
            "outputs": [_feature(f) for f in spec.description.output],
            "mil_ops": ops,
            "quantized_weight_ops": quantized,
            "quantized_weights": sum(quantized.values()),
            "author": spec.description.metadata.author,
            "short_description": spec.description.metadata.shortDescription,
            "user_defined_metadata": sorted(spec.description.metadata.userDefined.keys()),
            "size_bytes": size_bytes(package),
            "numerics_checked": sys.platform == "darwin",
        }


class CoreMLRunner(Runner):
    """macOS only: feeds one image at a time to ``MLModel.predict``."""

    def __init__(self, artifact_dir: Path):
        import coremltools as ct

        meta = read_json(artifact_dir / "metadata.json")
        self.input_name = meta["input"]["name"]
        self.output_name = meta["output"]["name"]
        self.image = meta["input"].get("kind") == "image"
        self.model = ct.models.MLModel(str(artifact_dir / MODEL_FILE))

    def run(self, x: np.ndarray) -> np.ndarray:
        from PIL import Image

        outs = []
        for img in x:
            if self.image:  # the package takes 0..255 pixels; 0..1 floats round to uint8
                hwc = np.clip(np.rint(img.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
                feed = Image.fromarray(hwc, "RGB")
            else:
                feed = img[None]
            out = self.model.predict({self.input_name: feed})[self.output_name]
            outs.append(np.asarray(out, dtype=np.float32))
        return np.concatenate(outs, axis=0)


def _source_model(job: ExportJob):
    """The model to convert and where its weights came from ("fp32" or "qat")."""
    if job.precision == "int8" and job.qat_float_model is not None:
        model, source = job.qat_float_model, "qat"
    else:
        model, source = job.model, "fp32"
    if model.training:  # conversion must see eval-mode BatchNorm; leave the caller's module alone
        model = copy.deepcopy(model).eval()
    return model, source


def _convert(model, precision: str, kind: str, base: dict[str, Any]):
    """torch.export -> Core ML ML Program (-> INT8 weights). Returns (model, I/O names)."""
    import coremltools as ct
    import torch

    h, w = model.cfg.input_size
    names = {"input": base.get("input", {}).get("name", "input"),
             "output": base.get("output", {}).get("name", "output")}
    with torch.no_grad():
        # coremltools accepts only the ATen dialect, not export's training dialect.
        ep = torch.export.export(model, (torch.rand(1, 3, h, w),)).run_decompositions({})
    if kind == "image":
        inputs = [ct.ImageType(name=names["input"], shape=(1, 3, h, w), scale=1.0 / 255.0,
                               bias=[0.0, 0.0, 0.0], color_layout=ct.colorlayout.RGB)]
    else:  # float32 even for FP16 programs: apps fill a Float32 MLMultiArray
        inputs = [ct.TensorType(name=names["input"], shape=(1, 3, h, w), dtype=np.float32)]
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    mlmodel = ct.convert(ep, inputs=inputs, outputs=[ct.TensorType(name=names["output"])],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                         compute_precision=compute)
    if precision == "int8":
        cto = require("coremltools.optimize.coreml", "coreml")
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel",
            weight_threshold=WEIGHT_THRESHOLD))
        mlmodel = cto.linear_quantize_weights(mlmodel, config)
    return mlmodel, names


# A file coremltools' torch.export path leaves inside the package; no Manifest entry
# names it and Core ML does not read it.
_STRAY = ("executorch_debug_handle_mapping.json",)


def make_reproducible(package: Path) -> None:
    """Same model, same package bytes: coremltools writes the spec with protobuf maps in
    hash order and gives each Manifest item a random UUID. Re-serialise the spec with
    sorted maps, name each item by a UUID derived from its path, drop stray files."""
    import uuid

    from coremltools.proto import Model_pb2

    for name in _STRAY:
        (package / name).unlink(missing_ok=True)
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed: dict[str, str] = {}
    items = {}
    for old, item in manifest.get("itemInfoEntries", {}).items():
        new = str(uuid.uuid5(uuid.NAMESPACE_URL, "hrnet-edge-coreml:" + item["path"]))
        renamed[old] = new
        items[new] = item
        if item.get("name", "").endswith(".mlmodel"):
            spec_path = package / "Data" / item["path"]
            spec = Model_pb2.Model()
            spec.ParseFromString(spec_path.read_bytes())
            spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    manifest["itemInfoEntries"] = dict(sorted(items.items()))
    if "rootModelIdentifier" in manifest:
        manifest["rootModelIdentifier"] = renamed.get(manifest["rootModelIdentifier"],
                                                      manifest["rootModelIdentifier"])
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


def _feature(feature) -> dict[str, Any]:
    """A spec input/output as plain facts (name, kind, shape, dtype or colour space)."""
    ftype = feature.type
    which = ftype.WhichOneof("Type")
    out: dict[str, Any] = {"name": feature.name, "kind": which}
    if which == "imageType":
        img = ftype.imageType
        out.update(shape=[1, 3, int(img.height), int(img.width)],
                   color_space=type(img).ColorSpace.Name(img.colorSpace))
    elif which == "multiArrayType":
        arr = ftype.multiArrayType
        out.update(shape=[int(s) for s in arr.shape],
                   dtype=type(arr).ArrayDataType.Name(arr.dataType).lower())
    return out


def mil_op_counts(spec) -> dict[str, int]:
    """Op types of every function of an ML Program, nested blocks included."""
    counts: Counter[str] = Counter()

    def walk(block) -> None:
        for op in block.operations:
            counts[op.type] += 1
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return dict(sorted(counts.items()))


def _metadata(job: ExportJob, source: str, kind: str, names: dict[str, str],
              mlmodel) -> dict[str, Any]:
    """The job's base metadata plus what this artifact really is."""
    meta = json.loads(json.dumps(job.metadata, default=str))  # deep, JSON-only copy
    spec = mlmodel.get_spec()
    out_feature = _feature(spec.description.output[0])
    meta.update(target="coreml", precision=job.precision, format="coreml_mlpackage",
                source_model=source)
    meta["input"] = {**meta.get("input", {}), **_input_contract(kind, names["input"], job)}
    meta["output"] = {**meta.get("output", {}), "name": names["output"],
                      "dtype": out_feature.get("dtype", "float32"),
                      "shape": out_feature.get("shape", meta.get("output", {}).get("shape"))}
    meta["quantization"] = _quantization(job.precision, source, mil_op_counts(spec))
    meta["runtime"] = {"minimum_deployment_target": "iOS17 / macOS14", "model_type": "mlProgram",
                       "compute_precision": "float32" if job.precision == "fp32" else "float16",
                       "embedded_metadata": f"user_defined_metadata['{EMBED_KEY}'] holds this "
                                            "JSON (without export_seconds and the artifact hash)"}
    notes = list(meta.get("notes", []))
    notes.append("numerics unchecked on Linux: MLModel.predict runs only on macOS")
    if kind == "image":
        notes.append("input is an RGB image (CVPixelBuffer / PIL) of 0..255 pixels; Core ML scales "
                     "by 1/255 and the graph normalizes with mean/std")
    if job.precision != "fp32":
        notes.append("FP16 program: output MLMultiArray is Float16")
    if job.precision == "int8":
        notes.append("INT8 is weight-only (constexpr_affine_dequantize); activations run in FP16")
    meta["notes"] = notes
    meta["tool_versions"] = _tool_versions()
    # no export time inside the artifact: the same inputs give the same bytes (the
    # export's time is in exports/index.json)
    return meta


def _input_contract(kind: str, name: str, job: ExportJob) -> dict[str, Any]:
    h, w = job.model.cfg.input_size
    if kind == "image":
        norm = dict(job.metadata.get("input", {}).get("normalization") or {})
        norm["recipe"] = ("feed the RGB image as is (0..255 pixels); Core ML multiplies by 1/255 "
                          "and the graph computes (x - mean) / std itself")
        return {"name": name, "kind": "image", "shape": [1, 3, h, w], "height": h, "width": w,
                "layout": "image (HWC pixels)", "dtype": "uint8", "color": "RGB",
                "range": [0, 255], "image_scale": 1.0 / 255.0, "normalization": norm}
    return {"name": name, "kind": "tensor", "shape": [1, 3, h, w], "layout": "NCHW",
            "dtype": "float32"}


def _quantization(precision: str, source: str, ops: dict[str, int]) -> dict[str, Any] | None:
    if precision != "int8":
        return None
    quantized = sum(n for op, n in ops.items() if op.startswith("constexpr_"))
    return {
        "method": "weight-only linear quantization (coremltools.optimize.coreml."
                  "linear_quantize_weights)",
        "weights": "int8 symmetric per output channel",
        "activations": "float16 (not quantized)",
        "weight_threshold": WEIGHT_THRESHOLD,
        "quantized_weights": quantized,
        "note": f"{quantized} weight tensors are int8; tensors of at most {WEIGHT_THRESHOLD} "
                f"elements stay float16 (the program has {ops.get('conv', 0)} convs)",
        "weights_source": "qat_float_model (QAT-fine-tuned float weights)" if source == "qat"
        else "model (float weights)",
    }


def _describe(mlmodel, meta: dict[str, Any], names: dict[str, str]) -> None:
    """Author, descriptions and user_defined_metadata (string values only)."""
    from hrnet_edge import __version__

    mlmodel.author = "hrnet-edge"
    mlmodel.version = __version__
    mlmodel.short_description = (
        f"{meta.get('variant', 'HRNet')} ({meta.get('task', '?')}), {meta['precision']}; "
        f"metadata JSON in user_defined_metadata['{EMBED_KEY}']")
    mlmodel.input_description[names["input"]] = (
        "RGB image, 0..255" if meta["input"].get("kind") == "image" else "RGB NCHW float32 in 0..1")
    mlmodel.output_description[names["output"]] = str(meta.get("output", {}).get("kind", "output"))
    embedded = {k: v for k, v in meta.items() if k not in ("artifact", "export_seconds")}
    user = mlmodel.user_defined_metadata
    user[EMBED_KEY] = json.dumps(embedded, sort_keys=True, separators=(",", ":"))
    for key in ("variant", "task", "precision", "source_model"):
        if meta.get(key) is not None:
            user[key] = str(meta[key])


def _tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _TOOLS:
        try:
            versions[dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            continue
    return versions
