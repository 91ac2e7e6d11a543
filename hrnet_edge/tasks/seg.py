"""Semantic segmentation (HRNetV2): Cityscapes or image + index-mask folders, mIoU."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrnet_edge.errors import ConfigError
from hrnet_edge.tasks.base import LOGIT_THRESHOLDS, EvalResult, Task, register

if TYPE_CHECKING:
    from hrnet_edge.runconfig import RunConfig
    from hrnet_edge.runs import RunDir

FORMATS = ("cityscapes", "masks")


@dataclass(frozen=True)
class SegData:
    """Where the segmentation data comes from.

    ``root`` None means: generate the built-in synthetic street scenes, written in the
    Cityscapes layout inside the run directory (so the default run goes through the
    real loader). ``format`` is ``cityscapes`` (``leftImg8bit/<split>/<city>/
    *_leftImg8bit.png`` + ``gtFine/<split>/<city>/*_gtFine_labelIds.png``, labelIds
    mapped to the 19 train ids) or ``masks`` (``images/<split>/*``, ``masks/<split>/
    <stem>.png`` holding class indices, ``classes.txt`` or ``classes.json``).
    """

    root: str | None = None
    format: str = "cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    synthetic_train_images: int = 600
    synthetic_val_images: int = 100
    synthetic_image_size: tuple[int, int] = (256, 512)
    seed: int = 0
    workers: int = 1
    scale_range: tuple[float, float] = (0.75, 1.5)  # random scale before the crop
    flip: bool = True


@dataclass(frozen=True)
class SegEval:
    """``flip_test`` averages the logits with those of the mirrored image."""

    flip_test: bool = False


IGNORE = 255


@register
class SegTask(Task):
    name = "seg"
    metric = "mIoU"
    metric_label = "mIoU"
    agreement_label = "pixel agreement"
    data_config = SegData
    eval_config = SegEval
    shown_metrics = ("mIoU", "pixel_acc")
    default_overrides = {"input_size": (128, 256)}
    recipes = {
        # HRNetV2's optimizer and schedule, shortened to a few minutes on 2 CPU cores
        "quick": {"epochs": 12, "batch_size": 8, "lr": 0.05, "weight_decay": 5e-4, "optimizer": "sgd",
                  "momentum": 0.9, "schedule": "poly", "poly_power": 0.9, "warmup_epochs": 0},
        # HRNetV2 on Cityscapes (Wang et al. 2020): SGD momentum 0.9, lr 0.01, wd 5e-4,
        # poly 0.9, batch 12 (4 GPUs), 484 epochs; crop 512x1024 (set input_size)
        "paper": {"epochs": 484, "batch_size": 12, "lr": 0.01, "weight_decay": 5e-4, "optimizer": "sgd",
                  "momentum": 0.9, "schedule": "poly", "poly_power": 0.9, "warmup_epochs": 0,
                  "precision": "auto"},
    }
    # Relative to the logits' own range. Pixel agreement: share of pixels whose argmax
    # is the reference's; pixels on class borders flip first under reduced precision.
    thresholds = LOGIT_THRESHOLDS

    def validate(self, cfg: RunConfig) -> None:
        if cfg.data.format not in FORMATS:
            raise ConfigError(f"[data] format {cfg.data.format!r} is not known; valid: {', '.join(FORMATS)}")
        lo, hi = cfg.data.scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"[data] scale_range must be 0 < low <= high, got {cfg.data.scale_range}")

    # --- data --------------------------------------------------------------------------
    def generate(self, root: Path, cfg: RunConfig, reuse_only: bool) -> None:
        from hrnet_edge.data.synthetic_seg import generate_synthetic_cityscapes

        d = cfg.data
        generate_synthetic_cityscapes(root, num_train=d.synthetic_train_images, num_val=d.synthetic_val_images,
                                      image_size=tuple(d.synthetic_image_size), seed=d.seed, reuse_only=reuse_only)

    def build_dataset(self, root: Path, split: str, cfg: RunConfig, train: bool):
        from hrnet_edge.data.segmentation import load_cityscapes, load_mask_folder

        load = load_cityscapes if cfg.data.format == "cityscapes" else load_mask_folder
        ds = load(root, split, input_size=tuple(cfg.model_config().input_size), train=train,
                  scale_range=tuple(cfg.data.scale_range), flip=cfg.data.flip, seed=cfg.data.seed)
        return self.check_classes(ds, cfg)

    # --- training ----------------------------------------------------------------------
    def loss(self, outputs, batch, cfg: RunConfig):
        """Pixel cross-entropy with the ignore label, on logits upsampled bilinearly from
        1/4 resolution to the label's (as HRNetV2 trains)."""
        import torch.nn.functional as F

        labels = batch[1]
        logits = F.interpolate(outputs, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)

    # --- evaluation --------------------------------------------------------------------
    def evaluate(self, infer, dataset, cfg: RunConfig, batch_size: int = 32, keep_outputs: bool = False,
                 max_images: int | None = None, fixed_batch: int | None = None,
                 progress: bool = False) -> EvalResult:
        from hrnet_edge.evaluation.segmentation import evaluate_segmentation

        r = evaluate_segmentation(infer, dataset, batch_size=min(batch_size, 16), flip_test=cfg.eval.flip_test,
                                  max_images=max_images, keep_logits=keep_outputs, fixed_batch=fixed_batch,
                                  progress=progress)
        n = len(r.labels_pred)
        return EvalResult(metrics=r.metrics, outputs=r.logits, decoded=r.labels_pred, ids=np.arange(n))

    def agreement(self, ref: EvalResult, out: EvalResult, dataset) -> float:
        return float((ref.decoded == out.decoded).mean())

    def eval_note(self, cfg: RunConfig) -> str:
        return ("mIoU on the validation split (confusion matrix over all pixels, label 255 ignored), "
                "logits upsampled bilinearly to the label size"
                f"{', flip test on' if cfg.eval.flip_test else ''}")

    # --- metadata ----------------------------------------------------------------------
    def app_info(self, run: RunDir, cfg: RunConfig) -> dict[str, Any]:
        ds = self.build_dataset(self.data_root(run, cfg), cfg.data.val_split, cfg, train=False)
        return {"classes": list(ds.class_names), "palette": [list(map(int, c)) for c in ds.palette],
                "ignore_index": IGNORE, "flip_test": cfg.eval.flip_test}
