"""What a check compares an artifact against: the run's PyTorch models and data.

Loaded once per check process: the float model (best checkpoint), the NNCF QAT model
when the run has one, the validation split, and each reference's evaluation (computed
on first use and cached).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hrnet_edge.io import size_bytes
from hrnet_edge.runconfig import RunConfig
from hrnet_edge.runs import RunDir


@dataclass
class CheckContext:
    run: RunDir
    cfg: RunConfig
    val_ds: Any
    float_model: Any
    _qat_model: Any = None
    _evals: dict[str, Any] = field(default_factory=dict)

    @property
    def qat_model(self):
        if self._qat_model is None:
            from quantization import load_qat

            self._qat_model = load_qat(self.float_model_copy(), self.run.qat_dir,
                                       self.example_input()).eval()
        return self._qat_model

    def float_model_copy(self):
        import copy

        return copy.deepcopy(self.float_model)

    def example_input(self):
        import torch

        return torch.from_numpy(self.latency_input())

    def model_for(self, source: str):
        return self.qat_model if source == "qat" else self.float_model

    def evaluate(self, runner, batch_size: int):
        from hrnet_edge.evaluation.pose import evaluate_pose

        return evaluate_pose(runner, self.val_ds, batch_size=batch_size, keep_heatmaps=True,
                             max_images=self.cfg.check.eval_images)

    def reference_eval(self, source: str):
        if source not in self._evals:
            from hrnet_edge.training.pose_task import torch_infer

            self._evals[source] = self.evaluate(torch_infer(self.model_for(source)), batch_size=32)
        return self._evals[source]

    def agreement(self, ref, out) -> float:
        from hrnet_edge.evaluation.pose import keypoint_agreement

        arrays = self.val_ds.instance_arrays()
        sel = np.isin(arrays["image_id"], ref.image_ids)
        sizes = arrays["bbox"][sel][:, 2:].max(axis=1)
        return keypoint_agreement(ref.keypoints, out.keypoints, sizes, alpha=0.05)

    @staticmethod
    def batch_size_for(target: str) -> int:
        # exported artifacts have a static batch of one, as apps run them
        return 32 if target == "pytorch" else 1

    def latency_input(self) -> np.ndarray:
        return self.val_ds.stack_images([0])

    def checkpoint_size(self, precision: str) -> int:
        if precision == "int8":
            return size_bytes(self.run.qat_dir)
        return size_bytes(self.run.best_checkpoint())


def load_context(run: RunDir, cfg: RunConfig) -> CheckContext:
    """Build the check context of a run (float model, validation split)."""
    import torch

    from hrnet_edge.training.loop import load_trained
    from hrnet_edge.training.pose_task import data_root, build_dataset

    torch.set_num_threads(cfg.check.threads)
    model, _sha = load_trained(run, cfg)
    val = build_dataset(data_root(run, cfg), cfg.data.val_split, cfg, train=False)
    return CheckContext(run=run, cfg=cfg, val_ds=val, float_model=model)


def pytorch_runner(ctx: CheckContext, precision: str):
    """The PyTorch model itself as a runner: fp32 (float) or int8 (NNCF fake-quant)."""
    from hrnet_edge.training.pose_task import torch_infer

    return torch_infer(ctx.model_for("qat" if precision == "int8" else "fp32"))
