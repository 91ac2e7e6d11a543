"""What a check compares an artifact against: the run's PyTorch models and data.

The PyTorch references are checked first (``pytorch-fp32``, ``pytorch-int8`` = the NNCF
QAT model); their raw outputs and decoded predictions on the validation split are saved
as ``checks/pytorch-<precision>.npz``, so each artifact's check process loads them
instead of re-running PyTorch.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hrnet_edge.errors import RunDirError
from hrnet_edge.evaluation.parity import parity_stats
from hrnet_edge.io import atomic_path, read_json, size_bytes
from hrnet_edge.runconfig import RunConfig
from hrnet_edge.runs import RunDir
from hrnet_edge.tasks.base import EvalResult, Task

# which saved PyTorch reference an artifact built from a given source is compared with
REFERENCE_OF_SOURCE = {"fp32": "fp32", "qat": "int8"}


@dataclass
class CheckContext:
    run: RunDir
    cfg: RunConfig
    task: Task
    val_ds: Any

    @cached_property
    def float_model(self):
        from hrnet_edge.training.loop import load_trained

        return load_trained(self.run, self.cfg)[0]

    @cached_property
    def qat_model(self):
        import torch

        from quantization import load_qat

        example = torch.from_numpy(self.latency_input())
        return load_qat(copy.deepcopy(self.float_model), self.run.qat_dir, example).eval()

    def evaluate(self, runner, target: str) -> EvalResult:
        # exported artifacts have a static batch of one, as apps run them
        return self.task.evaluate(runner, self.val_ds, self.cfg, batch_size=32, keep_outputs=True,
                                  max_images=self.cfg.check.eval_images,
                                  fixed_batch=None if target == "pytorch" else 1)

    def reference_path(self, precision: str) -> Path:
        return self.run.checks / f"pytorch-{precision}.npz"

    def save_reference(self, precision: str, result: EvalResult) -> None:
        self.task.save_reference(self.reference_path(precision), result)

    def reference_eval(self, source: str) -> EvalResult:
        """The saved PyTorch evaluation an artifact from ``source`` is compared with."""
        precision = REFERENCE_OF_SOURCE[source]
        path = self.reference_path(precision)
        row_path = self.run.check_path("pytorch", precision)
        if not path.is_file() or not row_path.is_file():
            raise RunDirError(f"reference pytorch-{precision} was not checked yet ({path.name} missing); "
                              f"run 'hrnet-edge check --run {self.run.root}'")
        row = read_json(row_path)
        if row.get("status") != "reference" or not isinstance(row.get("metric"), dict):
            why = " ".join(str(row.get("reason") or row.get("status")).split())[:200]
            raise RunDirError(f"reference pytorch-{precision} could not be checked ({why}); an artifact "
                              f"is compared with it, so fix that first and run 'hrnet-edge check --run "
                              f"{self.run.root} --force'")
        return self.task.load_reference(path, row["metric"])

    @cached_property
    def natural(self) -> np.ndarray | None:
        """Random crops of shipped photos at the input size (None when switched off)."""
        from hrnet_edge.data.natural import natural_images

        n = self.cfg.check.natural_images
        return natural_images(n, tuple(self.cfg.model_config().input_size)) if n > 0 else None

    def natural_path(self, precision: str) -> Path:
        return self.run.checks / f"pytorch-{precision}-natural.npy"

    def natural_parity(self, runner, target: str, precision: str, source: str) -> dict | None:
        """Outputs on the photos: saved for a PyTorch reference, else compared with the
        reference's (raw-output statistics and the task's label-free agreement)."""
        if self.natural is None:
            return None
        outs = np.concatenate([runner(self.natural[i:i + 1]) for i in range(len(self.natural))])
        if target == "pytorch":
            with atomic_path(self.natural_path(precision)) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, outs)
            return None
        path = self.natural_path(REFERENCE_OF_SOURCE[source])
        if not path.is_file():
            return None  # a run checked before this comparison existed
        ref = np.load(path)
        stats = parity_stats(ref, outs)
        stats["agreement"] = self.task.output_agreement(ref, outs)
        confident = self.task.confident_agreement(ref, outs)
        if confident is not None:
            stats["agreement_confident"], stats["confident_outputs"] = confident
        stats["images"] = int(len(outs))
        return stats

    def latency_input(self) -> np.ndarray:
        return self.val_ds.stack_images([0])

    def checkpoint_size(self, precision: str) -> int:
        if precision == "int8":
            return size_bytes(self.run.qat_dir / "qat.safetensors")
        return size_bytes(self.run.best_checkpoint())


def load_context(run: RunDir, cfg: RunConfig) -> CheckContext:
    """Build the check context of a run (the validation split; models load on demand)."""
    task = cfg.task
    _train, val = task.datasets(run, cfg)
    return CheckContext(run=run, cfg=cfg, task=task, val_ds=val)


def pytorch_runner(ctx: CheckContext, precision: str):
    """The PyTorch model itself as a runner: fp32 (float) or int8 (NNCF fake-quant)."""
    import torch

    from hrnet_edge.tasks import torch_infer

    torch.set_num_threads(ctx.cfg.check.threads)
    return torch_infer(ctx.qat_model if precision == "int8" else ctx.float_model)
