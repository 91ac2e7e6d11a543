"""COCO box evaluation of the V2p head's detections; decoding re-exported from the runtime.

The raw output (P, 5 + C) per image is decoded by the torch-free device runtime
(:mod:`hrnet_edge_runtime.decode.det`: point grid, scores, NMS, letterbox mapping),
which the checks and a device share; its names are importable from here as before,
with the runtime's errors raised as this project's :class:`ConfigError` (a bad
decoding setting) and :class:`DataError` (an output that does not fit). This module
adds the pycocotools side: COCO results and box AP.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
from typing import Sequence

from hrnet_edge_runtime.decode import det as _det
from hrnet_edge_runtime.decode.agreement import detection_agreement
from hrnet_edge_runtime.decode.det import (
    BASE_STRIDE,
    MAX_LOG_DISTANCE,
    Detections,
    batched_nms,
    box_iou,
    nms,
    point_scores,
    sigmoid,
)
from hrnet_edge_runtime.decode.errors import DecodeConfigError, DecodeInputError

from hrnet_edge.errors import ConfigError, DataError

__all__ = ["BASE_STRIDE", "BBOX_STAT_NAMES", "MAX_LOG_DISTANCE", "DecodeConfig", "Detections",
           "batched_nms", "box_iou", "coco_results", "decode", "decode_batch", "detection_agreement",
           "evaluate_bbox", "level_shapes", "level_strides", "nms", "point_grid", "point_scores",
           "project_errors", "sigmoid", "to_original"]

BBOX_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


@contextlib.contextmanager
def project_errors():
    """Raise the runtime's decoding errors as ConfigError / DataError, same message."""
    try:
        yield
    except DecodeConfigError as exc:
        raise ConfigError(str(exc)) from exc
    except DecodeInputError as exc:
        raise DataError(str(exc)) from exc


def _translated(fn):
    """``fn`` raising this project's errors (see :func:`project_errors`)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with project_errors():
            return fn(*args, **kwargs)
    return wrapper


level_strides = _translated(_det.level_strides)
level_shapes = _translated(_det.level_shapes)
point_grid = _translated(_det.point_grid)
to_original = _translated(_det.to_original)


class DecodeConfig(_det.DecodeConfig):
    __doc__ = _det.DecodeConfig.__doc__

    def __post_init__(self):
        with project_errors():
            super().__post_init__()

    def describe(self, input_size: Sequence[int], levels: int) -> dict:
        with project_errors():
            return super().describe(input_size, levels)

    describe.__doc__ = _det.DecodeConfig.describe.__doc__


def decode(raw, input_size: Sequence[int], levels: int, cfg: _det.DecodeConfig = DecodeConfig()) -> Detections:
    """:func:`hrnet_edge_runtime.decode.det.decode`, raising ConfigError / DataError."""
    with project_errors():
        return _det.decode(raw, input_size, levels, cfg)


def decode_batch(raw, input_size: Sequence[int], levels: int,
                 cfg: _det.DecodeConfig = DecodeConfig()) -> list[Detections]:
    """:func:`hrnet_edge_runtime.decode.det.decode_batch`, raising ConfigError / DataError."""
    with project_errors():
        return _det.decode_batch(raw, input_size, levels, cfg)


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
