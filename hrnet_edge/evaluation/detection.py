"""Detection decoding, NMS and COCO box evaluation of the V2p head's raw output.

The head returns one array (P, 5 + C) per image over all pyramid points (see
``hrnet_edge.models.heads.DetHead``); everything that turns it into boxes lives here,
outside the graph, so every runtime's output is decoded by the same rules. Nothing
here imports torch: an app in another language reproduces it from
:meth:`DecodeConfig.describe`, which is written into metadata.json.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from hrnet_edge.errors import ConfigError, DataError

BASE_STRIDE = 4
# exp() arguments above this are clamped: exp(12) * 4 px is ~650k px, beyond any input,
# so after clipping to the frame the box is the same as without the clamp, and float32
# never overflows.
MAX_LOG_DISTANCE = 12.0
BBOX_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


@dataclass
class Detections:
    """Detections of one image.

    Attributes:
        boxes: (K, 4) float32 ``x1, y1, x2, y2``.
        scores: (K,) float32, descending.
        classes: (K,) int64 contiguous class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def level_strides(levels: int) -> list[int]:
    """Strides of the pyramid levels: 4, 8, 16, ... (``4 * 2**i``)."""
    if not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ConfigError(f"levels must be a positive integer, got {levels!r}")
    return [BASE_STRIDE * 2**i for i in range(int(levels))]


def level_shapes(input_size: Sequence[int], levels: int) -> list[tuple[int, int]]:
    """Point grid (rows, cols) of each level for an input (H, W).

    Level 0 is the stride-4 map (H // 4, W // 4); level i > 0 is average-pooled from it
    with kernel and stride 2**i, so it has ``(H // 4) // 2**i`` rows (floor).

    Raises:
        ConfigError: input_size is not two positive ints, or too small for ``levels``.
    """
    strides = level_strides(levels)
    if len(input_size) != 2 or any(not isinstance(v, (int, np.integer)) or v <= 0 for v in input_size):
        raise ConfigError(f"input_size must be two positive ints (H, W), got {tuple(input_size)!r}")
    h0, w0 = int(input_size[0]) // BASE_STRIDE, int(input_size[1]) // BASE_STRIDE
    shapes = [(h0 // 2**i, w0 // 2**i) for i in range(len(strides))]
    if min(min(s) for s in shapes) == 0:
        need = strides[-1]
        raise ConfigError(f"input_size {tuple(input_size)} is too small for {levels} levels: "
                          f"the stride-{need} level would be empty; H and W must be >= {need}")
    return shapes


def point_grid(input_size: Sequence[int], levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and strides of all pyramid points, in the head's output order.

    Returns:
        centres (P, 2) float32 ``(cx, cy) = ((col + 0.5) * s, (row + 0.5) * s)`` and
        strides (P,) float32, level by level, row-major inside a level.
    """
    centres, strides = [], []
    for s, (h, w) in zip(level_strides(levels), level_shapes(input_size, levels)):
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        centres.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], axis=1))
        strides.append(np.full(h * w, s))
    return (np.concatenate(centres).astype(np.float32),
            np.concatenate(strides).astype(np.float32))


@dataclass(frozen=True)
class DecodeConfig:
    """Post-processing of the raw detection output.

    Attributes:
        score_threshold: candidates need ``score > score_threshold``.
        pre_nms_topk: candidates (point, class pairs) kept per level, best first.
        iou_threshold: NMS suppresses a box whose IoU with a kept one is ``> this``.
        max_detections: detections kept per image after NMS.
        class_aware: NMS only within a class (else across all classes).
        min_box_size: boxes narrower or shorter than this (input pixels, after
            clipping) are dropped before NMS: a box squeezed to a line by the image
            border or a collapsed distance carries no object, and its IoU with anything
            is numerically meaningless.
    """

    score_threshold: float = 0.05
    pre_nms_topk: int = 1000
    iou_threshold: float = 0.6
    max_detections: int = 100
    class_aware: bool = True
    min_box_size: float = 1.0

    def __post_init__(self):  # a bad value raises here, not as odd detections later
        if not 0.0 <= self.score_threshold < 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        for name in ("pre_nms_topk", "max_detections"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")

    def to_dict(self) -> dict:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)

    def describe(self, input_size: Sequence[int], levels: int) -> dict:
        """A language-neutral description of decoding, for metadata.json.

        Args:
            input_size: the model input (H, W).
            levels: number of pyramid levels.
        """
        rows, first = [], 0
        for s, (h, w) in zip(level_strides(levels), level_shapes(input_size, levels)):
            rows.append({"stride": s, "rows": h, "cols": w, "first_point": first, "num_points": h * w})
            first += h * w
        return {
            "output": {
                "shape": "(N, P, 5 + C)", "points": first, "levels": rows,
                "order": "level by level (stride ascending), row-major inside a level; "
                         "point index p = first_point + row * cols + col",
                "per_point": "[l, t, r, b, centerness_logit, class_logit_0 .. class_logit_{C-1}]",
            },
            "point_centre": "cx = (col + 0.5) * stride, cy = (row + 0.5) * stride (input pixels)",
            "box": "x1 = cx - exp(l) * stride, y1 = cy - exp(t) * stride, "
                   "x2 = cx + exp(r) * stride, y2 = cy + exp(b) * stride",
            "exp_clamp": f"the exp argument is clamped to at most {MAX_LOG_DISTANCE} (no lower clamp)",
            "sigmoid": "sigmoid(x) = 1 / (1 + exp(-x)), computed stably",
            "score": "score[p, c] = sigmoid(class_logit_c) * sigmoid(centerness_logit)",
            "candidates": f"per level: all (point, class) pairs with score > {self.score_threshold}; "
                          f"keep the {self.pre_nms_topk} highest per level (ties: lower p * C + c first)",
            "clip": "boxes clipped to x in [0, W], y in [0, H] of the input, then boxes with "
                    f"x2 - x1 < {self.min_box_size} or y2 - y1 < {self.min_box_size} dropped, before NMS",
            "iou": "continuous coordinates, no +1: area = (x2 - x1) * (y2 - y1); "
                   "IoU = inter / (area_a + area_b - inter), 0 when the union is <= 0",
            "nms": f"greedy: candidates sorted by descending score (ties: lower p * C + c first); "
                   f"keep the first, drop every later box with IoU > {self.iou_threshold}, repeat; "
                   + ("per class (boxes of different classes never suppress each other)"
                      if self.class_aware else "across all classes"),
            "max_detections": f"keep the first {self.max_detections} after NMS, in descending score",
            "letterbox": "image resized by `scale` and placed at the top-left of the input, no "
                         "padding offset: original = input / scale, clipped to the original image",
            "config": self.to_dict(),
            "input_size": [int(input_size[0]), int(input_size[1])],
        }


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow for any finite input)."""
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def point_scores(centerness_logit: np.ndarray, class_logits: np.ndarray) -> np.ndarray:
    """The score of every (point, class): ``sigmoid(class) * sigmoid(centerness)``.

    Args:
        centerness_logit: (P,) logits.
        class_logits: (P, C) logits.
    """
    return sigmoid(class_logits) * sigmoid(centerness_logit)[:, None]


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


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: highest score first, drop boxes with IoU > threshold to a kept one.

    Ties in score are broken by the lower index (a stable sort).

    Returns:
        int64 indices of the kept boxes, in descending score.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest])[0] <= iou_threshold]
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


def _check_raw(raw: np.ndarray, num_points: int) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[0] != num_points or raw.shape[1] < 6:
        raise DataError(f"raw detection output must be (P, 5 + C) with P = {num_points} points "
                        f"for this input size and C >= 1, got {raw.shape}")
    if np.isnan(raw).any():
        raise DataError(f"raw detection output holds {int(np.isnan(raw).sum())} NaN values")
    return raw.astype(np.float64)


def _select_candidates(scores: np.ndarray, level_sizes: list[int], cfg: DecodeConfig) -> np.ndarray:
    """Flat indices ``p * C + c`` above the threshold, top-k per level, ascending."""
    num_classes = scores.shape[1]
    picked, start = [], 0
    for n in level_sizes:
        flat = scores[start:start + n].ravel()
        idx = np.flatnonzero(flat > cfg.score_threshold)
        idx = idx[np.argsort(-flat[idx], kind="stable")[:cfg.pre_nms_topk]]
        picked.append(idx + start * num_classes)
        start += n
    return np.sort(np.concatenate(picked))


def decode(raw: np.ndarray, input_size: Sequence[int], levels: int,
           cfg: DecodeConfig = DecodeConfig()) -> Detections:
    """Detections of one image from the head's raw output.

    Args:
        raw: (P, 5 + C) raw output of one image.
        input_size: the model input (H, W).
        levels: number of pyramid levels.
        cfg: thresholds and NMS settings.

    Returns:
        Boxes in input pixels, clipped to the input frame, in descending score.

    Raises:
        DataError: raw has the wrong shape for the input size or holds NaN.
    """
    centres, strides = point_grid(input_size, levels)
    raw = _check_raw(raw, centres.shape[0])
    num_classes = raw.shape[1] - 5
    scores = point_scores(raw[:, 4], raw[:, 5:])
    flat = _select_candidates(scores, [h * w for h, w in level_shapes(input_size, levels)], cfg)
    pts, cls = flat // num_classes, flat % num_classes
    dist = np.exp(np.minimum(raw[pts, :4], MAX_LOG_DISTANCE)) * strides[pts, None]
    c = centres[pts].astype(np.float64)
    boxes = np.stack([c[:, 0] - dist[:, 0], c[:, 1] - dist[:, 1],
                      c[:, 0] + dist[:, 2], c[:, 1] + dist[:, 3]], axis=1)
    h, w = int(input_size[0]), int(input_size[1])
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    sc = scores[pts, cls]
    big = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= cfg.min_box_size)
    boxes, sc, cls = boxes[big], sc[big], cls[big]
    keep = (batched_nms(boxes, sc, cls, cfg.iou_threshold) if cfg.class_aware
            else nms(boxes, sc, cfg.iou_threshold))[:cfg.max_detections]
    return Detections(boxes[keep], sc[keep].astype(np.float32), cls[keep].astype(np.int64))


def decode_batch(raw: np.ndarray, input_size: Sequence[int], levels: int,
                 cfg: DecodeConfig = DecodeConfig()) -> list[Detections]:
    """:func:`decode` of every image of a (N, P, 5 + C) batch."""
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise DataError(f"raw detection output of a batch must be (N, P, 5 + C), got {raw.shape}")
    return [decode(r, input_size, levels, cfg) for r in raw]


def to_original(dets: Detections, scale: float, orig_hw: Sequence[int]) -> Detections:
    """Map detections from the letterboxed input back to the original image.

    The letterbox resizes by ``scale`` and places the image at the top-left (no
    padding offset), so ``original = input / scale``, clipped to the original (H, W).
    """
    if not np.isfinite(scale) or scale <= 0:
        raise DataError(f"letterbox scale must be a positive finite number, got {scale!r}")
    h, w = int(orig_hw[0]), int(orig_hw[1])
    boxes = np.clip(np.asarray(dets.boxes, np.float64) / scale, 0, [w, h, w, h])
    return Detections(boxes.astype(np.float32), dets.scores.copy(), dets.classes.copy())


def coco_results(dets_per_image: Sequence[Detections], image_ids: Sequence[int],
                 category_ids: Sequence[int]) -> list[dict]:
    """COCO bbox results (the list ``COCO.loadRes`` takes).

    Args:
        dets_per_image: detections in original image pixels, one per image.
        image_ids: the COCO image id of each entry.
        category_ids: COCO category id of each contiguous class index.
    """
    if len(dets_per_image) != len(image_ids):
        raise DataError(f"got {len(dets_per_image)} detection sets but {len(image_ids)} image ids")
    out = []
    for dets, image_id in zip(dets_per_image, image_ids):
        if len(dets) and (dets.classes.min() < 0 or dets.classes.max() >= len(category_ids)):
            raise DataError(f"class index {int(dets.classes.max())} out of range: valid are "
                            f"0..{len(category_ids) - 1} (one per category id)")
        for (x1, y1, x2, y2), s, c in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.classes.tolist()):
            out.append({"image_id": int(image_id), "category_id": int(category_ids[c]),
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(s, 5)})
    return out


def _as_coco(coco_gt):
    """A pycocotools COCO from a COCO object, an annotation dict or a file path."""
    from pycocotools.coco import COCO

    if isinstance(coco_gt, COCO):
        return coco_gt
    if isinstance(coco_gt, (str, os.PathLike)):
        from hrnet_edge.data.coco_keypoints import load_coco_json

        coco_gt = load_coco_json(coco_gt)  # DataError on a missing or malformed file
    if not isinstance(coco_gt, dict) or "categories" not in coco_gt:
        raise DataError("coco_gt must be a pycocotools COCO, a COCO dict with 'images', "
                        "'annotations' and 'categories', or a path to such a JSON file")
    coco = COCO()
    coco.dataset = coco_gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_ids(coco, results: list[dict]) -> None:
    """DataError for ids COCOeval would assert on (images) or silently drop (categories)."""
    for key, valid in (("image_id", set(coco.getImgIds())), ("category_id", set(coco.getCatIds()))):
        unknown = sorted({int(r[key]) for r in results} - valid)
        if unknown:
            raise DataError(f"results name {key} {unknown[:10]} not in the ground truth; "
                            f"valid: {sorted(valid)[:20]}")


def evaluate_bbox(coco_gt, results: list[dict], image_ids: Sequence[int] | None = None) -> dict:
    """COCO box AP/AR of results with pycocotools' COCOeval, quietly.

    Args:
        coco_gt: a ``pycocotools.coco.COCO``, a COCO annotation dict or a file path.
        results: COCO bbox results (see :func:`coco_results`).
        image_ids: evaluate on these images (default: every ground-truth image, so
            images without predictions count as misses).

    Returns:
        AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100 as floats (-1 where COCOeval has
        no ground truth in that area range), and ``no_results`` (bool): with no results
        every metric is 0.0, since ``loadRes`` cannot take an empty list.
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {**{k: 0.0 for k in BBOX_STAT_NAMES}, "no_results": True}
    coco = _as_coco(coco_gt)
    _check_ids(coco, results)
    with contextlib.redirect_stdout(io.StringIO()):
        dets = coco.loadRes([dict(r) for r in results])  # copies: loadRes adds keys
        ev = COCOeval(coco, dets, iouType="bbox")
        ev.params.imgIds = sorted(int(i) for i in (coco.getImgIds() if image_ids is None else image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {**{k: float(v) for k, v in zip(BBOX_STAT_NAMES, ev.stats)}, "no_results": False}


def _greedy_matches(src: Detections, dst: Detections, iou: float) -> int:
    """One-to-one greedy matches of ``src`` (descending score) to same-class ``dst``."""
    if not len(src) or not len(dst):
        return 0
    ious = box_iou(src.boxes, dst.boxes)
    ious[src.classes[:, None] != dst.classes[None, :]] = -1.0
    free = np.ones(len(dst), bool)
    matched = 0
    for i in np.argsort(-src.scores.astype(np.float64), kind="stable"):
        cand = np.where(free, ious[i], -1.0)
        j = int(np.argmax(cand))  # the best overlap; ties go to the lower index
        if cand[j] >= iou:
            free[j] = False
            matched += 1
    return matched


def detection_agreement(ref: Detections, out: Detections, score_threshold: float,
                        iou: float = 0.9) -> tuple[float, float]:
    """How well ``out`` (e.g. an exported artifact) reproduces ``ref`` (PyTorch).

    Recall: the share of ref's detections with score > threshold that ``out`` has with
    the same class and IoU >= ``iou`` (matched one-to-one, greedily by descending ref
    score, against all of out's detections so a score just under the threshold still
    counts as reproduced). Precision: the same the other way round.

    Returns:
        (recall_of_ref, precision_of_out); a side with nothing above the threshold
        scores 1.0 (nothing to reproduce), so two empty sets give (1.0, 1.0).
    """
    ref_hi, out_hi = (Detections(d.boxes[m], d.scores[m], d.classes[m])
                      for d, m in ((ref, ref.scores > score_threshold), (out, out.scores > score_threshold)))
    recall = _greedy_matches(ref_hi, out, iou) / len(ref_hi) if len(ref_hi) else 1.0
    precision = _greedy_matches(out_hi, ref, iou) / len(out_hi) if len(out_hi) else 1.0
    return float(recall), float(precision)
