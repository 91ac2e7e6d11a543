"""Builds each target's ExportJob from a run directory.

The pipeline, not the targets, decides what each target starts from: float targets
get the best FP32 checkpoint; INT8 targets get the NNCF QAT model (OpenVINO, ONNX)
or its fine-tuned float weights to re-quantize with their own quantizer (TFLite,
ExecuTorch); TFLite gets an ONNX file handed over. Models and images are loaded once.
"""
from __future__ import annotations

import copy
import hashlib
from functools import cached_property, lru_cache
from pathlib import Path

from hrnet_edge.errors import RunDirError
from hrnet_edge.runconfig import RunConfig
from hrnet_edge.runs import RunDir
from converters.base import ExportJob, quantized_as


@lru_cache(maxsize=1)
def graph_code_key() -> str:
    """sha256 of what shapes an exported ONNX graph besides the weights: the model and
    export code (``hrnet_edge/models``, ``converters/onnx.py``, ``quantization``) and
    the torch and onnx versions."""
    import onnx
    import torch

    import converters
    import quantization

    h = hashlib.sha256(f"torch {torch.__version__} onnx {onnx.__version__}".encode())
    files = [*(Path(__file__).resolve().parents[1] / "models").glob("*.py"),
             Path(converters.__file__).resolve().parent / "onnx.py",
             *Path(quantization.__file__).resolve().parent.glob("*.py")]
    for f in sorted(files):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


class JobFactory:
    """Lazily loads what the run's exports need and hands out ExportJobs."""

    def __init__(self, run: RunDir, cfg: RunConfig):
        self.run, self.cfg = run, cfg

    @cached_property
    def _trained(self):
        from hrnet_edge.training.loop import load_trained

        return load_trained(self.run, self.cfg)

    @property
    def model(self):
        return self._trained[0]

    @cached_property
    def calibration(self):
        return self.cfg.task.calibration_images(self.run, self.cfg, self.cfg.export.calibration_images,
                                                seed=self.cfg.data.seed)

    def example_input(self):
        import torch

        return torch.from_numpy(self.calibration[:1].copy())

    @cached_property
    def checkpoint_sha256(self) -> str:
        from hrnet_edge.pipeline.stages import checkpoint_sha256

        return checkpoint_sha256(self.run)

    @cached_property
    def qat_sha256(self) -> str:
        from hrnet_edge.pipeline.stages import qat_files_sha256

        return qat_files_sha256(self.run)

    @cached_property
    def qat_model(self):
        from hrnet_edge.pipeline.stages import qat_stale_reason

        stale = qat_stale_reason(self.run)
        if stale:
            raise RunDirError(f"no usable QAT model in {self.run.qat_dir} ({stale}): run "
                              f"'hrnet-edge qat --run {self.run.root}'")
        from quantization import load_qat

        return load_qat(copy.deepcopy(self.model), self.run.qat_dir, self.example_input()).eval()

    @cached_property
    def qat_float_model(self):
        from quantization import strip_to_float

        return strip_to_float(self.qat_model, self.example_input()).eval()

    @cached_property
    def base_metadata(self) -> dict:
        from converters.metadata import base_metadata

        return base_metadata(self.model, self.cfg.task.app_info(self.run, self.cfg), self._trained[1])

    def onnx_for(self, source: str, form: str = "interpolate") -> Path:
        """An opset-17 ONNX of the float (``fp32``) or QAT-fine-tuned float (``qat``)
        model, its nearest upsampling written in ``form``."""
        from converters.onnx import export_onnx
        from hrnet_edge.models.blocks import upsample_form

        name = source if form == "interpolate" else f"{source}-{form}"
        # named by the hash of what it was made from, the weights and the code that writes
        # the graph: a new checkpoint or QAT model, or an upgrade that changes the model's
        # code or the exporter, never reuses an old intermediate file
        sha = self.qat_sha256 if source == "qat" else self.checkpoint_sha256
        path = self.run.root / "intermediate" / f"{name}-{sha[:16]}-{graph_code_key()[:8]}.onnx"
        if not path.is_file():
            model = self.qat_float_model if source == "qat" else self.model
            with upsample_form(model, form):
                export_onnx(model, path, self.model.cfg.input_size)
        return path

    def job(self, target: str, precision: str, out_dir: Path) -> ExportJob:
        """The ExportJob for one (target, precision)."""
        int8 = quantized_as(precision) == "int8"
        meta = dict(self.base_metadata)
        meta["source_model"] = "qat" if int8 else "fp32"
        if int8:
            meta["qat_sha256"] = self.qat_sha256
        job = ExportJob(model=self.model, precision=precision, out_dir=out_dir, metadata=meta,
                        calibration=self.calibration)
        if int8:
            job.qat_model = self.qat_model
            job.qat_float_model = self.qat_float_model
            job.options["carry_qat_ranges"] = self.cfg.export.carry_qat_ranges
        if target in ("tflite", "executorch"):
            job.options["upsample_form"] = self.cfg.export.upsample_form
        if target == "tflite":
            job.onnx_path = self.onnx_for("qat" if int8 else "fp32", self.cfg.export.upsample_form)
        return job
