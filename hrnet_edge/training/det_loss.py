"""FCOS-style targets and loss of the V2p detection head.

The raw output layout, the point grid and the box parametrisation are shared with
:mod:`hrnet_edge.evaluation.detection`, so training optimises exactly what decoding
reads back.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

from hrnet_edge.errors import ConfigError, DataError
from hrnet_edge.evaluation.detection import MAX_LOG_DISTANCE, level_strides, point_grid

BACKGROUND = -1
IGNORE = -2
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def default_level_ranges(levels: int) -> list[tuple[float, float]]:
    """FCOS regression ranges: level of stride s takes max(l, t, r, b) in [lo, 8 * s).

    Each lower bound is the previous upper bound (0 for the first level), and the last
    level is open-ended: (0, 32), (32, 64), (64, 128), (128, inf) for 4 levels.
    """
    strides = level_strides(levels)
    highs = [8.0 * s for s in strides[:-1]] + [math.inf]
    return list(zip([0.0] + highs[:-1], highs))


def _point_ranges(strides: torch.Tensor, level_ranges: Sequence[tuple[float, float]]):
    """Per-point (lo, hi) from the per-level ranges, levels ordered by stride."""
    distinct = torch.unique(strides)  # sorted ascending, as the levels are
    if len(distinct) != len(level_ranges):
        raise ConfigError(f"level_ranges has {len(level_ranges)} entries but the points come "
                          f"from {len(distinct)} levels (strides {distinct.tolist()})")
    level = torch.searchsorted(distinct, strides)
    ranges = torch.tensor([[float(lo), float(hi)] for lo, hi in level_ranges],
                          dtype=torch.float32, device=strides.device)
    return ranges[level, 0], ranges[level, 1]


def _check_gt(gt: torch.Tensor) -> None:
    if gt.ndim != 3 or gt.shape[-1] != 6:
        raise DataError("ground truth boxes must be (B, M, 6) rows [x1, y1, x2, y2, class, "
                        f"iscrowd] padded with -1, got {tuple(gt.shape)}")


def _image_targets(boxes: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor,
                   lo: torch.Tensor, hi: torch.Tensor, center_radius: float):
    """Targets of one image from its (M, 6) rows; see :func:`fcos_targets`."""
    num_points = centres.shape[0]
    # Padding rows (class -1) take no part in the assignment: dropping them first keeps
    # the (P, M) intermediates to the image's real boxes (the dataset pads every image
    # to [data] max_objects rows), which makes the targets several times cheaper.
    boxes = boxes[boxes[:, 4] >= 0]
    if boxes.shape[0] == 0:  # argmin below cannot reduce over zero boxes
        return (torch.full((num_points,), BACKGROUND, dtype=torch.long, device=centres.device),
                torch.zeros(num_points, 4, device=centres.device))
    crowd = boxes[:, 5] > 0
    x1, y1, x2, y2 = (boxes[:, k][None, :] for k in range(4))
    cx, cy = centres[:, 0:1], centres[:, 1:2]
    ltrb = torch.stack([cx - x1, cy - y1, x2 - cx, y2 - cy], dim=-1)  # (P, M, 4)
    inside = ltrb.min(dim=-1).values > 0
    # centre sampling: within center_radius * stride of the box centre (and, via
    # `inside`, within the box itself), so only the box's core trains as positive
    radius = center_radius * strides[:, None]
    near = ((cx - (x1 + x2) / 2).abs() < radius) & ((cy - (y1 + y2) / 2).abs() < radius)
    reach = ltrb.max(dim=-1).values
    in_range = (reach >= lo[:, None]) & (reach < hi[:, None])
    cand = inside & near & in_range & (~crowd)[None, :]
    area = ((x2 - x1) * (y2 - y1)).expand_as(cand)
    # ambiguous points take the smallest box; argmin returns the first on equal areas
    best = torch.where(cand, area, torch.full_like(area, math.inf)).argmin(dim=1)
    pos = cand.any(dim=1)
    cls = torch.full_like(pos, BACKGROUND, dtype=torch.long)
    cls[(inside & crowd[None, :]).any(dim=1)] = IGNORE
    cls[pos] = boxes[best[pos], 4].long()
    target = ltrb[torch.arange(num_points, device=pos.device), best] * pos[:, None]
    return cls, target


def centerness_of(ltrb: torch.Tensor) -> torch.Tensor:
    """FCOS centerness ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` of (..., 4) ltrb.

    Points with any non-positive distance (i.e. non-positives) get 0.
    """
    l, t, r, b = ltrb.unbind(-1)
    ok = ltrb.min(dim=-1).values > 0
    lr = torch.minimum(l, r) / torch.maximum(l, r).clamp_min(1e-12)
    tb = torch.minimum(t, b) / torch.maximum(t, b).clamp_min(1e-12)
    return torch.where(ok, (lr * tb).clamp_min(0).sqrt(), torch.zeros_like(l))


def fcos_targets(gt: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor,
                 level_ranges: Sequence[tuple[float, float]], center_radius: float = 1.5):
    """FCOS assignment of ground-truth boxes to pyramid points.

    A point is positive for a non-crowd box when it lies strictly inside the box, within
    ``center_radius * stride`` of the box centre, and max(l, t, r, b) is in its level's
    ``[lo, hi)``; a point positive for several boxes takes the smallest-area one. Points
    inside a crowd box that are not positive are ignored rather than negatives.

    Args:
        gt: (B, M, 6) rows ``[x1, y1, x2, y2, class_index, iscrowd]`` in input pixels,
            padded with rows of -1.
        centres: (P, 2) point centres (cx, cy); strides: (P,) (see ``point_grid``).
        level_ranges: one (lo, hi) per level, levels in ascending stride.
        center_radius: the centre-sampling radius in strides.

    Returns:
        class targets (B, P) long (-1 background, -2 ignore, else the class index), box
        targets (B, P, 4) ltrb distances in pixels (0 off positives), centerness targets
        (B, P) (0 off positives).
    """
    _check_gt(gt)
    centres = torch.as_tensor(centres, dtype=torch.float32, device=gt.device)
    strides = torch.as_tensor(strides, dtype=torch.float32, device=gt.device)
    lo, hi = _point_ranges(strides, level_ranges)
    gt = gt.float()
    # one image at a time: (P, M) intermediates stay small where (B, P, M) would not
    per_image = [_image_targets(g, centres, strides, lo, hi, center_radius) for g in gt]
    if not per_image:
        p = centres.shape[0]
        return (torch.zeros(0, p, dtype=torch.long), torch.zeros(0, p, 4), torch.zeros(0, p))
    cls = torch.stack([c for c, _ in per_image])
    box = torch.stack([b for _, b in per_image])
    return cls, box, centerness_of(box)


@lru_cache(maxsize=16)
def _grid(input_size: tuple[int, int], levels: int):
    centres, strides = point_grid(input_size, levels)
    return torch.from_numpy(centres), torch.from_numpy(strides)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor,
                       alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al.) of logits against 0/1 targets."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def giou_loss_ltrb(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of boxes given as ltrb distances from the same point, (K, 4) each."""
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    tgt_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inter_w = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 2], target[:, 2])
    inter_h = torch.minimum(pred[:, 1], target[:, 1]) + torch.minimum(pred[:, 3], target[:, 3])
    inter = inter_w * inter_h
    union = (pred_area + tgt_area - inter).clamp_min(1e-6)
    enclose = ((torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 2], target[:, 2]))
               * (torch.maximum(pred[:, 1], target[:, 1]) + torch.maximum(pred[:, 3], target[:, 3])))
    enclose = enclose.clamp_min(1e-6)
    giou = inter / union - (enclose - union) / enclose
    return 1 - giou


# The range term keeps every raw output within about +-8. Nothing else bounds the
# outputs at points nobody decodes (the centerness of negatives is never trained), and
# one model trained without it gave box values in [-25, 27], centerness logits in
# [-106, 19] and class logits in [-56, 1]. INT8 artifacts quantize the whole
# (N, P, 5 + C) output with one scale taken from such ranges (onnx2tf's min/max
# calibration), 0.23 wide there: coarser than box IoU 0.9 allows (TFLite INT8 lost 2.9
# AP points and agreed on 42 % of detections; with the term, 0.75 points and 98 %). A
# clamp in the graph does not help: the convolutions before it are quantized with
# their own range. -8 as a logit is a probability of 3.4e-4, below any useful score
# threshold. It needs the predictors' small start (models/hrnet.py): from PyTorch's
# default init, whose first outputs pass +-8, it dominated the first epoch and the
# model ended at AP 0.18 instead of 0.39 (bound 6 there).
OUTPUT_RANGE_BOUND = 8.0
RANGE_WEIGHT = 0.1


def det_loss(raw: torch.Tensor, gt: torch.Tensor, input_size: Sequence[int], levels: int,
             level_ranges: Sequence[tuple[float, float]] | None = None,
             center_radius: float = 1.5, range_bound: float | None = OUTPUT_RANGE_BOUND):
    """FCOS loss of the raw head output against ground-truth boxes.

    Focal loss over every non-ignored point and class (normalised by max(1, positives)),
    GIoU on positives weighted and normalised by the centerness targets, and BCE on the
    centerness logit of positives (normalised by max(1, positives)). With
    ``range_bound``, a range term: ``RANGE_WEIGHT`` x the squared excess of every raw
    value beyond +-range_bound, summed and normalised by max(1, positives) (see
    :data:`OUTPUT_RANGE_BOUND`); None leaves the range free.

    Args:
        raw: (B, P, 5 + C) head output.
        gt: (B, M, 6) ground-truth rows (see :func:`fcos_targets`).
        input_size: the model input (H, W).
        levels: number of pyramid levels.
        level_ranges: per-level regression ranges (default :func:`default_level_ranges`).
        center_radius: the centre-sampling radius in strides.

    Returns:
        (total, parts) where parts holds detached ``cls``, ``giou``, ``centerness``,
        ``range`` and ``num_pos``.
    """
    centres, strides = _grid(tuple(int(v) for v in input_size), int(levels))
    centres, strides = centres.to(raw.device), strides.to(raw.device)
    num_classes = raw.shape[-1] - 5
    if raw.ndim != 3 or raw.shape[1] != centres.shape[0] or num_classes < 1 or raw.shape[0] != gt.shape[0]:
        raise DataError(f"raw must be (B, P, 5 + C) with P = {centres.shape[0]} for input "
                        f"{tuple(input_size)} and {levels} levels, C >= 1 and B = {gt.shape[0]} "
                        f"(the ground truth's batch), got {tuple(raw.shape)}")
    ranges = default_level_ranges(levels) if level_ranges is None else level_ranges
    with torch.no_grad():
        cls_t, box_t, ctr_t = fcos_targets(gt.to(raw.device), centres, strides, ranges, center_radius)
    if cls_t.numel() and int(cls_t.max()) >= num_classes:
        raise DataError(f"ground-truth class index {int(cls_t.max())} out of range for "
                        f"{num_classes} classes (valid 0..{num_classes - 1})")
    pos = cls_t >= 0
    num_pos = int(pos.sum())
    norm = max(1.0, float(num_pos))
    raw = raw.float()
    onehot = F.one_hot(cls_t.clamp_min(0), num_classes).to(raw.dtype) * pos[..., None]
    cls_loss = sigmoid_focal_loss(raw[..., 5:], onehot)[cls_t != IGNORE].sum() / norm
    stride_b = strides.expand_as(pos)[pos][:, None]
    pred_ltrb = torch.exp(raw[..., :4][pos].clamp(max=MAX_LOG_DISTANCE)) * stride_b
    weight = ctr_t[pos]
    giou = (giou_loss_ltrb(pred_ltrb, box_t[pos]) * weight).sum() / weight.sum().clamp_min(1e-6)
    ctr_loss = F.binary_cross_entropy_with_logits(raw[..., 4][pos], weight, reduction="sum") / norm
    total = cls_loss + giou + ctr_loss
    range_loss = torch.zeros((), device=raw.device)
    if range_bound is not None:
        range_loss = RANGE_WEIGHT * (raw.abs() - range_bound).clamp_min(0).pow(2).sum() / norm
        total = total + range_loss
    parts = {"cls": cls_loss.detach(), "giou": giou.detach(), "centerness": ctr_loss.detach(),
             "range": range_loss.detach(), "num_pos": torch.tensor(float(num_pos))}
    return total, parts
