"""The task metrics of the project's host checks, computed on a device.

Same definitions and key names as the host's evaluation (``hrnet_edge.evaluation``), so
a device result's ``metric`` sits beside a host check row's ``metric``:

* pose: COCO OKS ``AP``, ``AP50``, ``AP75``, ``APm``, ``APl``, ``AR``, ``AR50``, ``AR75``,
  ``ARm``, ``ARl`` (pycocotools ``COCOeval``), ``PCK@0.05``, ``PCK@0.1``, ``num_instances``;
* det: COCO box ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``,
  ``AR100`` (``COCOeval``), ``no_results``;
* seg: ``mIoU``, ``pixel_acc``, ``mean_acc``, ``per_class_IoU``, ``absent_classes``,
  ``num_pixels`` (one confusion matrix over all pixels), ``num_images``;
* cls: ``top1``, ``top5``, ``num_images``.

numpy only; pycocotools (the ``metrics`` extra) is imported when a COCO metric is asked for.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

from hrnet_edge_runtime.errors import UsageError, require

POSE_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BBOX_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
# The primary metric per task, as the host's Task.metric names it.
PRIMARY = {"pose": "AP", "det": "AP", "seg": "mIoU", "cls": "top1"}
# COCO's per-keypoint OKS falloffs (the COCO evaluation code's sigmas); other keypoint
# sets get 0.05 each, as the host's dataset does.
COCO_OKS_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
                            0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0
PERSON_CATEGORY_ID = 1
PCK_ALPHAS = (0.05, 0.1)


def oks_sigmas(num_keypoints: int) -> np.ndarray:
    """COCO's sigmas for the 17 COCO keypoints, else 0.05 per keypoint."""
    return COCO_OKS_SIGMAS.copy() if num_keypoints == 17 else np.full(num_keypoints, 0.05)


# --- segmentation ---------------------------------------------------------------------

def confusion_matrix(pred: Any, gt: Any, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(K, K) int64 pixel counts, rows ground truth, columns prediction; pixels whose
    label is ``ignore_index`` are left out.

    Raises:
        UsageError: the shapes differ, or a counted id lies outside 0..K-1.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise UsageError(f"prediction shape {pred.shape} differs from label shape {gt.shape}")
    keep = gt != ignore_index
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    for name, v in (("label", g), ("prediction", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise UsageError(f"{name} ids must lie in 0..{num_classes - 1} (or be {ignore_index} in the "
                             f"label), got {int(v.min())}..{int(v.max())}")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def seg_metrics(conf: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """mIoU, pixel accuracy and mean class accuracy of a confusion matrix.

    A class neither in the ground truth nor predicted has no IoU (left out of the mean,
    ``None`` in ``per_class_IoU``, listed in ``absent_classes``); a class predicted but
    absent from the ground truth has IoU 0. Metrics are NaN when no pixel counted.
    """
    conf = np.asarray(conf, np.int64)
    k = conf.shape[0]
    if conf.ndim != 2 or conf.shape != (k, k):
        raise UsageError(f"a confusion matrix is square, got shape {conf.shape}")
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise UsageError(f"{len(names)} class names for a {k}-class confusion matrix")
    tp = np.diag(conf).astype(np.float64)
    truth, predicted = conf.sum(1).astype(np.float64), conf.sum(0).astype(np.float64)
    union = truth + predicted - tp
    seen = union > 0
    iou = np.zeros(k)
    np.divide(tp, union, out=iou, where=seen)
    total = float(conf.sum())
    nan = float("nan")
    recall = tp[truth > 0] / truth[truth > 0]
    return {"mIoU": float(iou[seen].mean()) if seen.any() else nan,
            "pixel_acc": float(tp.sum() / total) if total else nan,
            "mean_acc": float(recall.mean()) if total else nan,
            "per_class_IoU": {n: (float(v) if s else None) for n, v, s in zip(names, iou, seen)},
            "absent_classes": [n for n, s in zip(names, seen) if not s],
            "num_pixels": int(total)}


# --- classification -------------------------------------------------------------------

def class_ranks(logits: Any, labels: Any) -> np.ndarray:
    """(N,) rank of each true class among its row's logits (0 = top); equal logits rank
    the lower class index first, and NaN below every number (the decoder's order)."""
    x = np.asarray(logits, np.float64)
    lab = np.asarray(labels).astype(np.int64)
    if x.ndim != 2 or x.shape[1] == 0 or lab.shape != (x.shape[0],):
        raise UsageError(f"expected logits (N, K) and labels (N,), got {x.shape} and {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= x.shape[1]):
        raise UsageError(f"labels must lie in 0..{x.shape[1] - 1}, got {int(lab.min())}..{int(lab.max())}")
    x = np.where(np.isnan(x), -np.inf, x)
    true = x[np.arange(len(lab)), lab][:, None]
    index = np.arange(x.shape[1])[None, :]
    return ((x > true) | ((x == true) & (index < lab[:, None]))).sum(1).astype(np.int64)


def topk_accuracy(logits: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top<k>": share of rows whose true class ranks below k}`` (a k above K counts
    every class; NaN for no rows)."""
    ranks = class_ranks(logits, labels)
    return {f"top{int(k)}": float((ranks < int(k)).mean()) if ranks.size else float("nan") for k in ks}


# --- pose -----------------------------------------------------------------------------

def pck(pred: Any, gt: Any, visibility: Any, sizes: Any, alpha: float) -> float:
    """Share of labelled keypoints (v > 0) within ``alpha * size`` of the truth (NaN
    when none is labelled); ``size`` per instance is max(box w, h)."""
    d = np.linalg.norm(np.asarray(pred, np.float64)[..., :2] - np.asarray(gt, np.float64)[..., :2], axis=-1)
    mask = np.asarray(visibility) > 0
    if not mask.any():
        return float("nan")
    return float((d <= alpha * np.asarray(sizes, np.float64)[:, None])[mask].mean())


def _coco(dataset: dict):
    coco_mod = require("pycocotools.coco", "metrics")
    coco = coco_mod.COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _cocoeval(dataset: dict, results: list[dict], iou_type: str, image_ids: Sequence[int],
              sigmas: np.ndarray | None = None) -> np.ndarray:
    cocoeval = require("pycocotools.cocoeval", "metrics")
    coco = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dets = coco.loadRes([dict(r) for r in results])  # copies: loadRes adds keys
        ev = cocoeval.COCOeval(coco, dets, iou_type)
        ev.params.imgIds = sorted({int(i) for i in image_ids})
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def keypoint_results(keypoints: Any, image_ids: Sequence[int], scores: Sequence[float]) -> list[dict]:
    """COCO keypoint results (what ``COCO.loadRes`` takes) from (N, K, 3) x, y, score."""
    return [{"image_id": int(i), "category_id": PERSON_CATEGORY_ID,
             "keypoints": [round(float(v), 3) for v in np.asarray(kp).reshape(-1)], "score": float(s)}
            for kp, i, s in zip(keypoints, image_ids, scores)]


def oks_ap(dataset: dict, results: list[dict], image_ids: Sequence[int], sigmas: np.ndarray) -> dict[str, float]:
    """COCO OKS AP/AR of keypoint ``results`` against the annotation dict ``dataset``
    on ``image_ids`` (all 0.0 when there is no result; -1 where COCOeval has no ground
    truth in an area range)."""
    if not results:
        return {k: 0.0 for k in POSE_STATS}
    return dict(zip(POSE_STATS, map(float, _cocoeval(dataset, results, "keypoints", image_ids, sigmas))))


def box_results(boxes: Any, scores: Any, category_ids: Any, image_id: int) -> list[dict]:
    """COCO bbox results of one image from x1, y1, x2, y2 boxes (rounded as the host's)."""
    out = []
    for (x1, y1, x2, y2), s, c in zip(np.asarray(boxes).tolist(), np.asarray(scores).tolist(),
                                      np.asarray(category_ids).tolist()):
        out.append({"image_id": int(image_id), "category_id": int(c),
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(s, 5)})
    return out


def bbox_ap(dataset: dict, results: list[dict], image_ids: Sequence[int]) -> dict[str, Any]:
    """COCO box AP/AR of ``results`` on ``image_ids`` (images without a result count as
    misses), plus ``no_results``: with none, every metric is 0.0."""
    if not results:
        return {**{k: 0.0 for k in BBOX_STATS}, "no_results": True}
    stats = _cocoeval(dataset, results, "bbox", image_ids)
    return {**dict(zip(BBOX_STATS, map(float, stats))), "no_results": False}


def finite_or_none(metric: dict[str, Any]) -> dict[str, Any]:
    """``metric`` with NaN and infinities as None (JSON has no NaN), nested dicts too."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if np.isfinite(v) else None
        return v

    return clean(metric)
