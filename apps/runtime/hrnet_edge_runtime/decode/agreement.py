"""How well one set of detections reproduces another (an artifact against PyTorch)."""
from __future__ import annotations

import numpy as np

from hrnet_edge_runtime.decode.det import Detections
from hrnet_edge_runtime.decode.nms import box_iou


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
