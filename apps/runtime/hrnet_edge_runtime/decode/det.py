"""Detection decoding of the V2p head's raw output: point grid, boxes, scores, NMS.

The head returns one array (P, 5 + C) per image over all pyramid points; everything
that turns it into boxes lives here, outside the graph, so every runtime's output is
decoded by the same rules. An app in another language reproduces it from
:meth:`DecodeConfig.describe`, which is written into metadata.json
(``output.decoding``), and :class:`DetDecoder` reads it back from there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from hrnet_edge_runtime.decode import _meta
from hrnet_edge_runtime.decode.errors import DecodeConfigError, DecodeInputError, MetadataError
from hrnet_edge_runtime.decode.nms import batched_nms, box_iou, nms

BASE_STRIDE = 4
# exp() arguments above this are clamped: exp(12) * 4 px is ~650k px, beyond any input,
# so after clipping to the frame the box is the same as without the clamp, and float32
# never overflows.
MAX_LOG_DISTANCE = 12.0

__all__ = ["BASE_STRIDE", "MAX_LOG_DISTANCE", "DecodeConfig", "DetDecoder", "Detections", "batched_nms",
           "box_iou", "decode", "decode_batch", "letterbox_context", "level_shapes", "level_strides", "nms",
           "point_grid", "point_scores", "sigmoid", "to_original"]


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
        raise DecodeConfigError(f"levels must be a positive integer, got {levels!r}")
    return [BASE_STRIDE * 2**i for i in range(int(levels))]


def level_shapes(input_size: Sequence[int], levels: int) -> list[tuple[int, int]]:
    """Point grid (rows, cols) of each level for an input (H, W).

    Level 0 is the stride-4 map (H // 4, W // 4); level i > 0 is average-pooled from it
    with kernel and stride 2**i, so it has ``(H // 4) // 2**i`` rows (floor).

    Raises:
        DecodeConfigError: input_size is not two positive ints, or too small for ``levels``.
    """
    strides = level_strides(levels)
    if len(input_size) != 2 or any(not isinstance(v, (int, np.integer)) or v <= 0 for v in input_size):
        raise DecodeConfigError(f"input_size must be two positive ints (H, W), got {tuple(input_size)!r}")
    h0, w0 = int(input_size[0]) // BASE_STRIDE, int(input_size[1]) // BASE_STRIDE
    shapes = [(h0 // 2**i, w0 // 2**i) for i in range(len(strides))]
    if min(min(s) for s in shapes) == 0:
        need = strides[-1]
        raise DecodeConfigError(f"input_size {tuple(input_size)} is too small for {levels} levels: "
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
        for name in ("score_threshold", "iou_threshold", "min_box_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(v):
                raise DecodeConfigError(f"{name} must be a finite number, got {v!r}")
        if not 0.0 <= self.score_threshold < 1.0:
            raise DecodeConfigError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise DecodeConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        for name in ("pre_nms_topk", "max_detections"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DecodeConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.min_box_size < 0:
            raise DecodeConfigError(f"min_box_size must be >= 0 (input pixels), got {self.min_box_size}")
        if not isinstance(self.class_aware, (bool, np.bool_)):
            raise DecodeConfigError(f"class_aware must be true or false, got {self.class_aware!r}")

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
                         "padding offset: original = input / scale, clipped to the original image; a box "
                         "left with x2 <= x1 or y2 <= y1 (wholly in the padding) is dropped",
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


def _check_raw(raw: np.ndarray, num_points: int) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[0] != num_points or raw.shape[1] < 6:
        raise DecodeInputError(f"raw detection output must be (P, 5 + C) with P = {num_points} points "
                               f"for this input size and C >= 1, got {raw.shape}")
    if np.isnan(raw).any():
        raise DecodeInputError(f"raw detection output holds {int(np.isnan(raw).sum())} NaN values")
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
        DecodeInputError: raw has the wrong shape for the input size or holds NaN.
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
        raise DecodeInputError(f"raw detection output of a batch must be (N, P, 5 + C), got {raw.shape}")
    return [decode(r, input_size, levels, cfg) for r in raw]


def to_original(dets: Detections, scale: float, orig_hw: Sequence[int]) -> Detections:
    """Map detections from the letterboxed input back to the original image.

    The letterbox resizes by ``scale`` and places the image at the top-left (no
    padding offset), so ``original = input / scale``, clipped to the original (H, W).
    A box that lies wholly in the padding clips to zero width or height there; it covers
    nothing of the picture and is dropped (the others keep their order).
    """
    if not np.isfinite(scale) or scale <= 0:
        raise DecodeInputError(f"letterbox scale must be a positive finite number, got {scale!r}")
    h, w = int(orig_hw[0]), int(orig_hw[1])
    boxes = np.clip(np.asarray(dets.boxes, np.float64) / scale, 0, [w, h, w, h]).astype(np.float32)
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Detections(boxes[inside], dets.scores[inside].copy(), dets.classes[inside].copy())


def letterbox_context(orig_hw: Sequence[int], input_size: Sequence[int]) -> dict:
    """The letterbox of an (H, W) image into the input: the largest ``scale`` at which
    the whole image fits, placed at the top-left (no offset).

    Returns:
        ``{"scale": s, "orig_hw": [H, W]}``, the context :meth:`DetDecoder.decode` takes;
        resize the image to ``round(H * s) x round(W * s)`` (at least 1) and pad
        right and bottom.
    """
    if len(orig_hw) != 2 or any(not v > 0 for v in orig_hw):
        raise DecodeInputError(f"orig_hw must be the image's positive (H, W), got {tuple(orig_hw)!r}")
    h, w = int(orig_hw[0]), int(orig_hw[1])
    return {"scale": min(input_size[0] / h, input_size[1] / w), "orig_hw": [h, w]}


def _config_from(meta: dict) -> DecodeConfig:
    """The DecodeConfig of ``output.decoding``: its ``config`` (written by
    :meth:`DecodeConfig.describe`), else the short form's ``score_threshold`` and ``nms_iou``."""
    decoding = _meta.get(meta, "output.decoding")
    if isinstance(decoding, dict) and "config" in decoding:
        key, fields = "output.decoding.config", _meta.get(meta, "output.decoding.config")
        if not isinstance(fields, dict):
            raise MetadataError(key, f"must be an object, got {fields!r}")
        unknown = sorted(set(fields) - set(DecodeConfig.__dataclass_fields__))
        if unknown:
            raise MetadataError(key, f"holds unknown field(s) {unknown}; valid: "
                                f"{', '.join(DecodeConfig.__dataclass_fields__)}")
    else:
        key = "output.decoding"
        fields = {"score_threshold": _meta.number(meta, "output.decoding.score_threshold"),
                  "iou_threshold": _meta.number(meta, "output.decoding.nms_iou")}
    try:
        return DecodeConfig(**fields)
    except DecodeConfigError as exc:
        raise MetadataError(key, str(exc)) from None


class DetDecoder:
    """Raw (P, 5 + C) detection output -> boxes, scores, classes, configured from a
    detection metadata.json.

    Reads ``output.decoding`` (its ``config`` and ``input_size``), ``output.strides``,
    ``output.level_sizes``, ``output.num_classes``, ``output.classes`` and, when
    present, ``output.category_ids`` (the dataset's id of each class index).
    """

    task = "det"

    def __init__(self, meta: dict):
        self.config = _config_from(meta)
        size = _meta.get(meta, "output.decoding.input_size", None)
        self.input_size = _meta.input_hw(meta) if size is None else tuple(size)
        strides = _meta.get(meta, "output.strides")
        if not isinstance(strides, list) or not strides:
            raise MetadataError("output.strides", f"must be a non-empty list, got {strides!r}")
        self.levels = len(strides)
        try:
            shapes = level_shapes(self.input_size, self.levels)
        except DecodeConfigError as exc:
            raise MetadataError("output.decoding.input_size", str(exc)) from None
        if strides != level_strides(self.levels):
            raise MetadataError("output.strides", f"must be {level_strides(self.levels)} "
                                f"(4 * 2**level), got {strides}")
        sizes = _meta.get(meta, "output.level_sizes", None)
        if sizes is not None and [tuple(s) for s in sizes] != shapes:
            raise MetadataError("output.level_sizes", f"{sizes} does not fit input {list(self.input_size)}: "
                                f"expected {[list(s) for s in shapes]}")
        self.num_points = sum(h * w for h, w in shapes)
        self.num_classes = _meta.count(meta, "output.num_classes")
        self.classes = _meta.names(meta, "output.classes", self.num_classes)
        ids = _meta.get(meta, "output.category_ids", None)
        if ids is not None and (not isinstance(ids, list) or len(ids) != self.num_classes):
            raise MetadataError("output.category_ids", f"must list {self.num_classes} ids (one per "
                                f"class), got {ids!r}")
        self.category_ids = None if ids is None else np.asarray(ids, np.int64)

    def decode(self, raw: Any, context: dict | None = None) -> dict:
        """Detections of one image.

        Args:
            raw: the artifact's output for one image, (P, 5 + C) or (1, P, 5 + C).
            context: the letterbox that made the input: ``scale`` (input = original *
                scale) and ``orig_hw`` (the original image's (H, W)). Without it the
                boxes stay in model-input pixels.

        Returns:
            ``boxes`` (K, 4) float32 x1, y1, x2, y2; ``scores`` (K,) float32, descending;
            ``classes`` (K,) int64; ``labels`` (class names); ``category_ids`` (K,) int64
            or None when the metadata has none; ``coordinates``: ``"image"`` or ``"input"``.
        """
        arr = np.asarray(raw)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or arr.shape[1] != 5 + self.num_classes:
            raise DecodeInputError(f"raw must be one image's (P, 5 + C) = ({self.num_points}, "
                                   f"{5 + self.num_classes}) output, got shape {np.shape(raw)}")
        dets = decode(arr, self.input_size, self.levels, self.config)
        context = dict(context or {})
        space = "input"
        if "scale" in context or "orig_hw" in context:
            missing = [k for k in ("scale", "orig_hw") if k not in context]
            if missing:
                raise DecodeInputError(f"context lacks {missing[0]!r}: give both 'scale' and "
                                       "'orig_hw' of the letterbox, or neither")
            try:
                hw, scale = np.asarray(context["orig_hw"], np.float64), float(context["scale"])
            except (TypeError, ValueError):
                raise DecodeInputError("context 'scale' must be a number and 'orig_hw' the original "
                                       f"(H, W), got {context['scale']!r} and {context['orig_hw']!r}") from None
            if hw.shape != (2,) or not (hw > 0).all():
                raise DecodeInputError(f"context['orig_hw'] must be the original (H, W), got {context['orig_hw']!r}")
            dets, space = to_original(dets, scale, hw), "image"
        return {"boxes": dets.boxes, "scores": dets.scores, "classes": dets.classes,
                "labels": [self.classes[c] for c in dets.classes.tolist()],
                "category_ids": None if self.category_ids is None else self.category_ids[dets.classes],
                "coordinates": space}
