"""Pose (HRNetV1 heatmaps): top-down COCO keypoints, OKS AP."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrnet_edge.errors import ConfigError, DataError
from hrnet_edge.tasks.base import EvalResult, Task, register

if TYPE_CHECKING:
    from hrnet_edge.runconfig import RunConfig
    from hrnet_edge.runs import RunDir


@dataclass(frozen=True)
class PoseData:
    """Where the pose data comes from.

    ``root`` None means: generate the built-in synthetic COCO-keypoints dataset inside
    the run directory. Otherwise ``root`` holds ``annotations/person_keypoints_<split>.json``
    and ``images/<split>/`` as COCO does.
    """

    root: str | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    synthetic_train_images: int = 1200
    synthetic_val_images: int = 200
    synthetic_image_size: tuple[int, int] = (256, 256)
    seed: int = 0
    sigma: float = 2.0
    workers: int = 1
    # Training augmentation. HRNet's COCO recipe uses rotation 40 and scale 0.35 over
    # 210 epochs; the few-minute default run learns faster with milder augmentation.
    rotation: float = 15.0  # std in degrees, applied to 60% of crops
    scale_factor: float = 0.25  # std of the random scale
    flip: bool = True


@dataclass(frozen=True)
class PoseEval:
    """How pose outputs are decoded and scored (in training, QAT and every check).

    ``flip_test`` averages each crop's heatmaps with those of its mirror image (as the
    HRNet evaluation does); ``decoder`` is ``"dark"`` (distribution-aware sub-pixel
    refinement) or ``"quarter"`` (the original quarter-pixel shift).
    """

    flip_test: bool = True
    decoder: str = "dark"


@register
class PoseTask(Task):
    name = "pose"
    metric = "AP"
    metric_label = "OKS AP"
    agreement_label = "keypoint agreement"
    data_config = PoseData
    eval_config = PoseEval
    shown_metrics = ("AP", "AP50", "PCK@0.05", "PCK@0.1")
    default_overrides = {"input_size": (128, 96)}
    recipes = {
        # a few minutes on 2 CPU cores (the README's default run)
        "quick": {"epochs": 6, "batch_size": 16, "lr": 3e-3, "weight_decay": 1e-4, "optimizer": "adamw",
                  "schedule": "cosine", "warmup_epochs": 1},
        # HRNet pose on COCO (Sun et al. 2019): Adam, lr 1e-3, x0.1 at epochs 170 and 200,
        # 210 epochs, 32 images per GPU on 4 GPUs, input 256x192 (set it in model_overrides)
        "paper": {"epochs": 210, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "optimizer": "adamw",
                  "schedule": "step", "milestones": (170, 200), "warmup_epochs": 0,
                  "precision": "auto"},
    }
    # Heatmaps lie in about 0..1, so max |error| over their range is what the absolute
    # thresholds of the first pose runs were. Keypoint agreement: decoded keypoints
    # within 5% of the person's box size of the reference's.
    thresholds = {
        # float32 runtimes differ from PyTorch only by summation order
        "fp32": {"max_rel_abs": 1e-3, "min_cosine": 0.9999, "min_agreement": 0.99, "max_metric_drop": 0.005},
        # fp16 weights/activations: ~3 decimal digits
        "fp16": {"max_rel_abs": 3e-2, "min_cosine": 0.999, "min_agreement": 0.97, "max_metric_drop": 0.01},
        # bf16: ~2 decimal digits
        "bf16": {"max_rel_abs": 1e-1, "min_cosine": 0.99, "min_agreement": 0.9, "max_metric_drop": 0.03},
        # int8: one quantization step per layer adds up; the task metric is what counts
        "int8": {"max_rel_abs": 5e-1, "min_cosine": 0.95, "min_agreement": 0.8, "max_metric_drop": 0.05},
    }

    def validate(self, cfg: RunConfig) -> None:
        from hrnet_edge.data.heatmaps import DECODERS

        if cfg.eval.decoder not in DECODERS:
            raise ConfigError(f"[eval] decoder {cfg.eval.decoder!r} is not known; valid: {', '.join(DECODERS)}")
        if not isinstance(cfg.eval.flip_test, bool):
            raise ConfigError(f"[eval] flip_test must be true or false, got {cfg.eval.flip_test!r}")

    # --- data --------------------------------------------------------------------------
    def generate(self, root: Path, cfg: RunConfig, reuse_only: bool) -> None:
        from hrnet_edge.data.synthetic_pose import generate_synthetic_pose

        d = cfg.data
        generate_synthetic_pose(root, num_train=d.synthetic_train_images, num_val=d.synthetic_val_images,
                                image_size=tuple(d.synthetic_image_size), seed=d.seed, reuse_only=reuse_only)

    def build_dataset(self, root: Path, split: str, cfg: RunConfig, train: bool):
        """A top-down COCO-keypoints dataset for ``split`` (``train2017``, ``val2017``...)."""
        from hrnet_edge.data.coco_keypoints import CocoKeypoints

        ann = root / "annotations" / f"person_keypoints_{split}.json"
        images = root / "images" / split
        if not ann.is_file():
            raise DataError(f"annotation file {ann} is missing (expected COCO layout: "
                            f"annotations/person_keypoints_<split>.json and images/<split>/)")
        d = cfg.data
        return CocoKeypoints(str(ann), str(images), input_size=tuple(cfg.model_config().input_size),
                             train=train, sigma=d.sigma, rotation=d.rotation,
                             scale_factor=d.scale_factor, flip=d.flip)

    # --- training ----------------------------------------------------------------------
    def loss(self, outputs, batch, cfg: RunConfig):
        from hrnet_edge.training.losses import heatmap_mse

        return heatmap_mse(outputs, batch[1], batch[2])

    # --- evaluation --------------------------------------------------------------------
    def evaluate(self, infer, dataset, cfg: RunConfig, batch_size: int = 32, keep_outputs: bool = False,
                 max_images: int | None = None, fixed_batch: int | None = None,
                 progress: bool = False) -> EvalResult:
        from hrnet_edge.evaluation.pose import evaluate_pose

        r = evaluate_pose(infer, dataset, batch_size=fixed_batch or batch_size, progress=progress,
                          keep_heatmaps=keep_outputs, max_images=max_images,
                          flip_test=cfg.eval.flip_test, decoder=cfg.eval.decoder)
        return EvalResult(metrics=r.metrics, outputs=r.heatmaps, decoded=r.keypoints, ids=r.image_ids)

    # A keypoint whose heatmap peaks below this is one an app would drop (COCO-style
    # keypoint score thresholds sit at 0.2-0.3); on flat heatmaps the argmax is noise.
    CONFIDENT_PEAK = 0.2

    def _peaks_agree(self, ref: np.ndarray, out: np.ndarray) -> np.ndarray:
        n, k, h, w = ref.shape
        a, b = ref.reshape(n, k, -1).argmax(-1), out.reshape(n, k, -1).argmax(-1)
        return np.maximum(np.abs(a % w - b % w), np.abs(a // w - b // w)) <= 1

    def output_agreement(self, ref: np.ndarray, out: np.ndarray) -> float:
        """Share of heatmaps whose peak lies within one heatmap pixel of the reference's."""
        return float(self._peaks_agree(np.asarray(ref), np.asarray(out)).mean())

    def confident_agreement(self, ref: np.ndarray, out: np.ndarray) -> tuple[float, int] | None:
        """The same share over the heatmaps whose reference peak is at least
        ``CONFIDENT_PEAK`` (the keypoints an app keeps), and how many those are."""
        ref, out = np.asarray(ref), np.asarray(out)
        sure = ref.reshape(*ref.shape[:2], -1).max(-1) >= self.CONFIDENT_PEAK
        if not sure.any():
            return None
        return float(self._peaks_agree(ref, out)[sure].mean()), int(sure.sum())

    def agreement(self, ref: EvalResult, out: EvalResult, dataset) -> float:
        from hrnet_edge.evaluation.pose import keypoint_agreement

        arrays = dataset.instance_arrays()
        sel = np.isin(arrays["image_id"], ref.ids)
        sizes = arrays["bbox"][sel][:, 2:].max(axis=1)
        return keypoint_agreement(ref.decoded, out.decoded, sizes, alpha=0.05)

    def eval_note(self, cfg: RunConfig) -> str:
        return (f"OKS AP on the validation split, keypoints decoded with `{cfg.eval.decoder}`"
                f"{', flip test on' if cfg.eval.flip_test else ', no flip test'}")

    # --- metadata ----------------------------------------------------------------------
    def app_info(self, run: RunDir, cfg: RunConfig) -> dict[str, Any]:
        from hrnet_edge.data.keypoints import CROP_PADDING, FLIP_PAIRS, KEYPOINT_NAMES, SKELETON

        return {"crop_padding": CROP_PADDING, "keypoint_names": list(KEYPOINT_NAMES),
                "skeleton": [list(p) for p in SKELETON],
                "flip_pairs": [list(p) for p in FLIP_PAIRS], "decoder": cfg.eval.decoder,
                "sigma": cfg.data.sigma, "flip_test": cfg.eval.flip_test}
