"""Box overlap and greedy non-maximum suppression (continuous coordinates, no +1)."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes in continuous coordinates (no +1).

    Returns:
        (len(a), len(b)) float64; 0 where the union is empty.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    iw = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    ih = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# Boxes per block of the IoU matrix in :func:`nms` (a 256 x n float64 block at a time).
NMS_BLOCK = 256


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: highest score first, drop boxes with IoU > threshold to a kept one.

    Ties in score are broken by the lower index (a stable sort).

    The IoU of each box (in score order) with the boxes after it is computed a block of
    rows at a time by :func:`box_iou`, the same values the one-box-at-a-time greedy loop
    would compare, so the decisions are that loop's; only the bookkeeping is cheaper.

    Returns:
        int64 indices of the kept boxes, in descending score.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked = boxes[order]
    n = len(order)
    suppressed = np.zeros(n, bool)
    keep = []
    for start in range(0, n, NMS_BLOCK):
        stop = min(n, start + NMS_BLOCK)
        over = box_iou(ranked[start:stop], ranked[start:]) > iou_threshold  # (block, n - start)
        for k in range(start, stop):
            if suppressed[k]:
                continue
            keep.append(order[k])
            suppressed[k + 1:] |= over[k - start, k + 1 - start:]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                iou_threshold: float) -> np.ndarray:
    """Class-aware NMS: :func:`nms` inside each class, never across classes.

    Returns:
        int64 indices of the kept boxes, in descending score (ties: lower index).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64)
    classes = np.asarray(classes)
    # per class rather than the coordinate-offset trick: offsets change float values and
    # could flip IoU comparisons that sit exactly on the threshold
    kept = [np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c], iou_threshold)]
            for c in np.unique(classes)]
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    kept.sort()  # index order first, so the stable score sort breaks ties by index
    return kept[np.argsort(-scores[kept], kind="stable")].astype(np.int64)
