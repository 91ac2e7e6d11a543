"""Object detection (HRNetV2p with an FCOS-style head): COCO instances, bbox AP.

Raw output (N, P, 5 + C) per pyramid point; the numpy decoder of
:mod:`hrnet_edge.evaluation.detection` (score threshold, top-k per level, class-aware
NMS, back through the letterbox) turns it into boxes for COCOeval and for the
comparison of an artifact with PyTorch, and its description goes into metadata.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrnet_edge.errors import ConfigError
from hrnet_edge.evaluation.parity import parity_stats
from hrnet_edge.tasks.base import EvalResult, Task, register

if TYPE_CHECKING:
    from hrnet_edge.runconfig import RunConfig
    from hrnet_edge.runs import RunDir

FORMATS = ("coco",)


@dataclass(frozen=True)
class DetData:
    """Where the detection data comes from.

    ``root`` None means: generate the built-in synthetic scenes (six shape categories of
    every COCO size range on cluttered backgrounds, with occlusion and a few crowd
    regions), written as COCO instances (``annotations/instances_<split>.json``,
    ``images/<split>/``) inside the run directory, so the default run goes through the
    real loader. A user's COCO folder may also keep images in ``<root>/<split>/``.
    """

    root: str | None = None
    format: str = "coco"
    train_split: str = "train"
    val_split: str = "val"
    synthetic_train_images: int = 1200
    synthetic_val_images: int = 200
    synthetic_image_size: tuple[int, int] = (256, 256)
    seed: int = 0
    workers: int = 1
    scale_range: tuple[float, float] = (0.75, 1.25)  # scale jitter on top of the letterbox
    flip: bool = True
    max_objects: int = 100


@dataclass(frozen=True)
class DetEval:
    """Decoding (as in metadata.json) and the artifact comparison.

    ``agreement_score``: detections above it must be reproduced by the other side with
    the same class and IoU >= ``agreement_iou``.
    """

    score_threshold: float = 0.05
    pre_nms_topk: int = 1000
    iou_threshold: float = 0.6
    max_detections: int = 100
    agreement_score: float = 0.3
    agreement_iou: float = 0.9


# Raw outputs mix box log-distances and logits; relative to the output's range.
# Agreement: detections above agreement_score reproduced at IoU >= 0.9, same class
# (the lower of the two directions).
DET_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_rel_abs": 1e-3, "min_cosine": 0.9999, "min_agreement": 0.99, "max_metric_drop": 0.005},
    "fp16": {"max_rel_abs": 3e-2, "min_cosine": 0.999, "min_agreement": 0.9, "max_metric_drop": 0.01},
    "bf16": {"max_rel_abs": 1e-1, "min_cosine": 0.99, "min_agreement": 0.8, "max_metric_drop": 0.03},
    "int8": {"max_rel_abs": 5e-1, "min_cosine": 0.95, "min_agreement": 0.6, "max_metric_drop": 0.01},
}


@register
class DetTask(Task):
    name = "det"
    metric = "AP"
    metric_label = "box AP"
    agreement_label = "detection agreement"
    data_config = DetData
    eval_config = DetEval
    shown_metrics = ("AP", "AP50")
    default_overrides = {"input_size": (128, 128), "num_outputs": 6, "head_channels": 32}
    recipes = {
        # Measured on the built-in data (see the README): with two-conv towers, before
        # FCOS's small predictor start and the loss's range term, short schedules
        # scattered (0.13-0.24 at 12-14 epochs) and 20 epochs reached 0.326 (AMD EPYC);
        # with both, 0.386 at 20 epochs (Intel Xeon). With the edge widths' one-conv
        # towers (Xeon), one process of batch 8 at lr 1e-2: 20 epochs 0.420, 16 epochs
        # 0.378, 14 epochs 0.352. A step of 8 images is mostly per-op overhead, so a
        # second thread adds ~5 % and a second process of one thread ~70 %: two processes
        # of batch 8 (a total batch of 16, lr 2e-2) give 0.374 at 16 epochs and 0.387 at
        # 18, at 15-21 s an epoch against 21-29 s for one process; 14 epochs gave only
        # 0.296 (and lr 1e-2 at 14 epochs 0.270): short schedules scatter. Validation at
        # the middle and the last epoch keeps the run short (an evaluation of the early
        # model costs up to 5 s).
        "quick": {"epochs": 16, "batch_size": 8, "processes": 2, "lr": 2e-2, "lr_reference_batch": 16,
                  "weight_decay": 1e-4, "optimizer": "adamw", "schedule": "cosine", "warmup_epochs": 1,
                  "val_every": 8},
        # HRNetV2p on COCO (Wang et al. 2020, Faster R-CNN 2x): SGD lr 0.02, momentum 0.9,
        # wd 1e-4, batch 16 (8 GPUs x 2), 24 epochs, x0.1 at 16 and 22, 800x1333 inputs.
        # This head is anchor-free (FCOS-style) rather than Faster R-CNN's two stages.
        "paper": {"epochs": 24, "batch_size": 16, "lr": 0.02, "weight_decay": 1e-4, "optimizer": "sgd",
                  "momentum": 0.9, "schedule": "step", "milestones": (16, 22), "warmup_epochs": 1,
                  "precision": "auto"},
    }
    thresholds = DET_THRESHOLDS
    # Measured on the 14-epoch 128x128 model (FP32 box AP 0.2428): NNCF's init 0.1445;
    # one QAT epoch at the default 1e-5 0.1815, at 1e-4 0.2462. Keeping the box, centerness
    # and class predictors in float instead gave 0.2427 without QAT: their INT8 inputs and
    # weights are where the loss is, and QAT at 1e-4 wins it back. On the 20-epoch default
    # (FP32 0.3264, NNCF init 0.2980) one QAT epoch gave 0.3186 at batch 32 and 0.3211 at
    # batch 16 (twice the steps, 7 s longer), which brought TFLite's INT8 from 1.05 to
    # 0.91 points under FP32; lr 3e-4 at batch 32 gave 0.3191, two epochs 0.3292 (36 s more).
    # With the range term (Xeon): FP32 0.3858, NNCF init 0.2466, one QAT epoch 0.3812.
    # NNCF's fast bias correction was the cause of that low init: without it the init
    # gives 0.3782 (and takes 13 instead of 24 s), 15 QAT steps 0.3819, 30 steps 0.3864,
    # 75 steps (the epoch) 0.3865; so 30 steps of the one epoch (~25 s instead of ~70).
    # The same defaults on the one-conv, 14-epoch model: FP32 0.3521, init 0.3506, QAT 0.3521.
    # On the two-process, 16-epoch model (Xeon): FP32 0.3736, init 0.3721, 15 steps 0.3680,
    # 30 steps 0.3696, and every exported INT8 row was higher from the init alone (ORT,
    # OpenVINO, TFLite, ExecuTorch: 0.3713/0.3717/0.3702/0.3715 against 0.3703/0.3713/
    # 0.3690/0.3691 after 30 steps), with ~45 s less after training. So the quick recipe
    # keeps NNCF's calibrated init (epochs 0); [qat] epochs = 1 fine-tunes 30 steps.
    qat_defaults = {"epochs": 0, "lr": 1e-4, "batch_size": 16, "steps_per_epoch": 30, "bias_correction": False}

    def __init__(self):
        self._geometry: tuple[tuple[int, int], int, Any] | None = None
        self._agreement = (DetEval.agreement_score, DetEval.agreement_iou)

    def validate(self, cfg: RunConfig) -> None:
        if cfg.data.format not in FORMATS:
            raise ConfigError(f"[data] format {cfg.data.format!r} is not known; valid: {', '.join(FORMATS)}")
        lo, hi = cfg.data.scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"[data] scale_range must be 0 < low <= high, got {cfg.data.scale_range}")
        self.decode_config(cfg)  # raises ConfigError on a bad threshold

    @staticmethod
    def decode_config(cfg: RunConfig):
        from hrnet_edge.evaluation.detection import DecodeConfig

        e = cfg.eval
        return DecodeConfig(score_threshold=e.score_threshold, pre_nms_topk=e.pre_nms_topk,
                            iou_threshold=e.iou_threshold, max_detections=e.max_detections)

    def _bind(self, cfg: RunConfig) -> tuple[tuple[int, int], int, Any]:
        mc = cfg.model_config()
        self._geometry = (tuple(mc.input_size), int(mc.det_levels), self.decode_config(cfg))
        self._agreement = (float(cfg.eval.agreement_score), float(cfg.eval.agreement_iou))
        return self._geometry

    # --- data --------------------------------------------------------------------------
    def generate(self, root: Path, cfg: RunConfig, reuse_only: bool) -> None:
        from hrnet_edge.data.synthetic_det import generate_synthetic_coco_instances

        d = cfg.data
        generate_synthetic_coco_instances(root, num_train=d.synthetic_train_images, num_val=d.synthetic_val_images,
                                          image_size=tuple(d.synthetic_image_size), seed=d.seed,
                                          reuse_only=reuse_only)

    def build_dataset(self, root: Path, split: str, cfg: RunConfig, train: bool):
        from hrnet_edge.data.coco_instances import load_coco_instances

        d = cfg.data
        ds = load_coco_instances(root, split, tuple(cfg.model_config().input_size), train=train,
                                 scale_range=tuple(d.scale_range), flip=d.flip, seed=d.seed,
                                 max_objects=d.max_objects)
        return self.check_classes(ds, cfg)

    # --- training ----------------------------------------------------------------------
    def loss(self, outputs, batch, cfg: RunConfig):
        """Sigmoid focal loss (classes), GIoU (boxes, weighted by centerness) and BCE
        (centerness) on FCOS targets: :func:`hrnet_edge.training.det_loss.det_loss`."""
        from hrnet_edge.training.det_loss import det_loss

        mc = cfg.model_config()
        total, _parts = det_loss(outputs, batch[1], tuple(mc.input_size), mc.det_levels)
        return total

    # --- evaluation --------------------------------------------------------------------
    def evaluate(self, infer, dataset, cfg: RunConfig, batch_size: int = 32, keep_outputs: bool = False,
                 max_images: int | None = None, fixed_batch: int | None = None,
                 progress: bool = False) -> EvalResult:
        from hrnet_edge.evaluation.batching import run_batched
        from hrnet_edge.evaluation.detection import coco_results, decode_batch, evaluate_bbox, to_original

        size, levels, dcfg = self._bind(cfg)
        n = len(dataset) if max_images is None else min(max_images, len(dataset))
        outs, dets = [], []
        for s in range(0, n, batch_size):
            idx = list(range(s, min(n, s + batch_size)))
            raw = run_batched(infer, dataset.stack_images(idx), fixed_batch, 3, "detections (N, P, 5 + C)")
            for i, d in zip(idx, decode_batch(raw, size, levels, dcfg)):
                info = dataset.letterbox_info(i)
                dets.append(to_original(d, info["scale"], info["orig_hw"]))
            if keep_outputs:
                outs.append(raw)
        ids = [dataset.image_ids[i] for i in range(n)]
        metrics = evaluate_bbox(dataset.coco, coco_results(dets, ids, dataset.category_ids), image_ids=ids)
        return EvalResult(metrics=metrics, outputs=np.concatenate(outs) if keep_outputs else None,
                          decoded=_pack(dets), ids=np.asarray(ids))

    def agreement(self, ref: EvalResult, out: EvalResult, dataset) -> float:
        return self._agree(_unpack(ref.decoded, len(ref.ids)), _unpack(out.decoded, len(out.ids)))[0]

    def _agree(self, ref_dets: list, out_dets: list) -> tuple[float, float, float, int]:
        """(min of both directions, recall of ref, precision of out, detections above the
        score on both sides), over all images."""
        from hrnet_edge.evaluation.detection import detection_agreement

        score, iou = self._agreement
        hits = np.zeros(2)
        counts = np.zeros(2)
        for r, o in zip(ref_dets, out_dets):
            rec, prec = detection_agreement(r, o, score, iou)
            n = np.array([(r.scores > score).sum(), (o.scores > score).sum()], float)
            hits += np.array([rec, prec]) * n
            counts += n
        recall, precision = (hits / np.maximum(counts, 1)).tolist()
        recall, precision = (recall if counts[0] else 1.0), (precision if counts[1] else 1.0)
        return min(recall, precision), recall, precision, int(counts.sum())

    def parity(self, ref: EvalResult, out: EvalResult, dataset) -> dict[str, float]:
        """Raw-output statistics overall and per pyramid level (each level on its own
        range), plus the detection agreement both ways."""
        from hrnet_edge.evaluation.detection import level_shapes

        stats = parity_stats(ref.outputs, out.outputs)
        size, levels, _ = self._geometry
        first, per_level = 0, []
        for h, w in level_shapes(size, levels):
            s = parity_stats(ref.outputs[:, first:first + h * w], out.outputs[:, first:first + h * w])
            per_level.append({"psnr_db": s["psnr_db"], "cosine": s["cosine"]})
            first += h * w
        stats["levels"] = per_level
        both, recall, precision, _ = self._agree(_unpack(ref.decoded, len(ref.ids)), _unpack(out.decoded, len(out.ids)))
        stats.update(agreement=both, agreement_recall=recall, agreement_precision=precision)
        return stats

    def output_agreement(self, ref: np.ndarray, out: np.ndarray) -> float | None:
        """Detection agreement of two raw output batches (decoded in input pixels); None
        when neither side detects anything above ``agreement_score`` (photos without the
        dataset's objects), rather than a vacuous 1.0."""
        from hrnet_edge.evaluation.detection import decode_batch

        if self._geometry is None:
            raise RuntimeError("DetTask.output_agreement needs the geometry of an evaluate() call first")
        size, levels, dcfg = self._geometry
        both, _, _, counted = self._agree(decode_batch(np.asarray(ref), size, levels, dcfg),
                                          decode_batch(np.asarray(out), size, levels, dcfg))
        return both if counted else None

    def eval_note(self, cfg: RunConfig) -> str:
        e = cfg.eval
        return (f"COCO box AP (pycocotools COCOeval, AP@[.5:.95]) on the validation split; scores "
                f"> {e.score_threshold:g}, top {e.pre_nms_topk} per level, class-aware NMS at IoU "
                f"{e.iou_threshold:g}, {e.max_detections} per image, boxes mapped back through the letterbox")

    # --- metadata ----------------------------------------------------------------------
    def app_info(self, run: RunDir, cfg: RunConfig) -> dict[str, Any]:
        ds = self.build_dataset(self.data_root(run, cfg), cfg.data.val_split, cfg, train=False)
        mc = cfg.model_config()
        dcfg = self.decode_config(cfg)
        return {"classes": list(ds.class_names), "category_ids": [int(c) for c in ds.category_ids],
                "score_threshold": dcfg.score_threshold, "nms_iou": dcfg.iou_threshold,
                "decoder": dcfg.describe(tuple(mc.input_size), mc.det_levels)}


def _pack(dets: list) -> np.ndarray:
    """Detections of every image as one (K, 7) array: image row, x1, y1, x2, y2, score, class."""
    rows = [np.column_stack([np.full(len(d), i, np.float64), d.boxes, d.scores, d.classes])
            for i, d in enumerate(dets) if len(d)]
    return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 7))


def _unpack(packed: np.ndarray, n: int) -> list:
    from hrnet_edge.evaluation.detection import Detections

    packed = np.asarray(packed).reshape(-1, 7)
    out = []
    for i in range(n):
        p = packed[packed[:, 0] == i]
        out.append(Detections(p[:, 1:5].astype(np.float32), p[:, 5].astype(np.float32), p[:, 6].astype(np.int64)))
    return out
