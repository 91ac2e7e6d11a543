"""Detection decoding, NMS, COCO box AP, FCOS targets and loss on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hrnet_edge.errors import ConfigError, DataError
from hrnet_edge.evaluation.detection import (
    DecodeConfig, Detections, batched_nms, box_iou, coco_results, decode, decode_batch,
    detection_agreement, evaluate_bbox, level_shapes, nms, point_grid, to_original,
)
from hrnet_edge.training.det_loss import (
    IGNORE, OUTPUT_RANGE_BOUND, RANGE_WEIGHT, default_level_ranges, det_loss, fcos_targets,
)

# three boxes in a row: neighbours overlap with IoU 2/4 = 0.5 exactly, the outer pair 1/5
ROW = np.array([[0, 0, 3, 1], [1, 0, 4, 1], [2, 0, 5, 1]], np.float32)


# ----------------------------------------------------------------------------- IoU / NMS
def test_box_iou_hand_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 4, 4], [1, 1, 1, 3]], np.float32)
    b = np.array([[1, 1, 3, 3], [2, 0, 4, 2], [0, 0, 2, 2]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (3, 3)
    np.testing.assert_allclose(iou[0], [1 / 7, 0.0, 1.0])  # overlap 1 of 4+4-1; touching; same
    np.testing.assert_allclose(iou[1], [4 / 16, 4 / 16, 4 / 16])  # boxes inside a 4x4
    np.testing.assert_allclose(iou[2], [0.0, 0.0, 0.0])  # zero-area box: no union to divide
    np.testing.assert_allclose(box_iou(ROW, ROW), [[1, .5, .2], [.5, 1, .5], [.2, .5, 1]])


def test_nms_threshold_is_strict_and_greedy():
    scores = np.array([0.9, 0.8, 0.7])
    # IoU 0.5 is not > 0.5 nor > 0.6: nothing suppressed
    assert nms(ROW, scores, 0.5).tolist() == [0, 1, 2]
    assert nms(ROW, scores, 0.6).tolist() == [0, 1, 2]
    # at 0.4 box 1 goes (IoU 0.5 with 0); box 2 stays: only kept boxes suppress, and its
    # IoU with box 0 is 0.2
    assert nms(ROW, scores, 0.4).tolist() == [0, 2]
    # order follows the score, not the index
    assert nms(ROW, np.array([0.1, 0.9, 0.5]), 0.4).tolist() == [1]


def test_nms_ties_keep_lower_index():
    same = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6]], np.float32)
    assert nms(same, np.array([0.5, 0.5, 0.5]), 0.5).tolist() == [0, 2]
    assert nms(same, np.array([0.4, 0.5, 0.5]), 0.5).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def _greedy_one_at_a_time(boxes, scores, thr):
    """NMS as its definition reads: take the best left, drop what overlaps it > thr."""
    order = list(np.argsort(-np.asarray(scores, np.float64), kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= thr]
    return keep


def test_nms_across_block_boundaries_matches_the_definition():
    from hrnet_edge_runtime.decode.nms import NMS_BLOCK

    rng = np.random.default_rng(3)
    for n, thr in ((NMS_BLOCK + 90, 0.5), (2 * NMS_BLOCK + 1, 0.3), (NMS_BLOCK, 0.0)):
        xy = rng.uniform(0, 96, (n, 2))
        boxes = np.round(np.concatenate([xy, xy + rng.uniform(2, 30, (n, 2))], 1) / 2) * 2  # IoU ties
        scores = np.round(rng.random(n) * 8) / 8  # score ties
        kept = nms(boxes.astype(np.float32), scores, thr).tolist()
        assert kept == _greedy_one_at_a_time(boxes.astype(np.float32), scores, thr)
        assert 1 < len(kept) < n  # something kept, something suppressed


def test_batched_nms_never_crosses_classes():
    same = np.array([[0, 0, 1, 1]] * 3, np.float32)
    # classes 0, 1, 0: box 2 is suppressed by box 0 only; box 1 is another class
    assert batched_nms(same, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.5).tolist() == [0, 1]
    # equal scores across classes come out in index order
    assert batched_nms(same, np.array([0.5, 0.5, 0.5]), np.array([2, 1, 0]), 0.5).tolist() == [0, 1, 2]
    assert batched_nms(ROW, np.array([0.7, 0.8, 0.9]), np.array([1, 1, 1]), 0.4).tolist() == [2, 0]


# ----------------------------------------------------------------------------- decode
def _tiny_raw() -> np.ndarray:
    """16x16 input, 2 levels: 4x4 points at stride 4 (0..15), 2x2 at stride 8 (16..19).

    A: point 6 (row 1, col 2, centre (10, 6)), ltrb (4, 2, 2, 4) -> box (6, 4, 12, 10),
       class 0 at 0.5 * centerness 0.75 = 0.375.
    B: point 7 (centre (14, 6)), ltrb 4 each -> (10, 2, 18, 10) clipped to x <= 16,
       class 1 at 0.75 * 0.5 = 0.375 (a tie with A; A's p * C + c = 12 < 15).
    C: point 16 (level 1, centre (4, 4)), ltrb (2, 1, 8, 6) -> box (2, 3, 12, 10), both
       classes at 0.25; its IoU with A is 36 / 70 = 0.514.
    """
    raw = np.zeros((20, 7), np.float32)
    raw[:, 5:] = -20.0  # everything else scores ~1e-9
    raw[6, :4] = np.log([1.0, 0.5, 0.5, 1.0])
    raw[6, 4], raw[6, 5] = math.log(3.0), 0.0
    raw[7, 5:] = [-20.0, math.log(3.0)]
    raw[16, :4] = np.log(np.array([2, 1, 8, 6]) / 8.0)
    raw[16, 5:] = 0.0
    return raw


def test_grid_layout():
    assert level_shapes((16, 16), 2) == [(4, 4), (2, 2)]
    assert level_shapes((70, 37), 3) == [(17, 9), (8, 4), (4, 2)]  # floors, as avg_pool2d
    centres, strides = point_grid((16, 16), 2)
    assert centres.shape == (20, 2) and strides.tolist() == [4.0] * 16 + [8.0] * 4
    assert centres[6].tolist() == [10.0, 6.0] and centres[19].tolist() == [12.0, 12.0]
    with pytest.raises(ConfigError, match="too small"):
        level_shapes((16, 16), 4)


def test_grid_matches_the_head():
    from hrnet_edge.models.heads import DetHead

    head = DetHead((4,), num_classes=2, head_channels=4, levels=3, mode="bilinear", align_corners=False)
    raw = head([torch.zeros(1, 4, 70 // 4, 37 // 4)])  # the stride-4 map of a 70x37 input
    assert raw.shape == (1, point_grid((70, 37), 3)[0].shape[0], 7)


def test_decode_hand_built_raw():
    cfg = DecodeConfig(iou_threshold=0.5)
    dets = decode(_tiny_raw(), (16, 16), 2, cfg)
    # A, then B (tie, higher p * C + c), then C class 1; C class 0 went to NMS under A
    np.testing.assert_allclose(dets.boxes, [[6, 4, 12, 10], [10, 2, 16, 10], [2, 3, 12, 10]], atol=1e-5)
    np.testing.assert_allclose(dets.scores, [0.375, 0.375, 0.25], atol=1e-6)
    assert dets.classes.tolist() == [0, 1, 1]
    assert dets.boxes.dtype == np.float32 and dets.scores.dtype == np.float32
    # class-agnostic NMS: C class 1 is suppressed by A as well
    flat = decode(_tiny_raw(), (16, 16), 2, DecodeConfig(iou_threshold=0.5, class_aware=False))
    assert flat.classes.tolist() == [0, 1] and len(flat) == 2
    # default IoU 0.6: both C pairs survive
    assert decode(_tiny_raw(), (16, 16), 2).classes.tolist() == [0, 1, 0, 1]


def test_decode_threshold_topk_and_max():
    raw = _tiny_raw()
    assert decode(raw, (16, 16), 2, DecodeConfig(score_threshold=0.3)).classes.tolist() == [0, 1]
    # one per level: A (tie-break over B) and C class 0, which A then suppresses
    top1 = decode(raw, (16, 16), 2, DecodeConfig(pre_nms_topk=1, iou_threshold=0.5))
    np.testing.assert_allclose(top1.boxes, [[6, 4, 12, 10]], atol=1e-5)
    assert len(decode(raw, (16, 16), 2, DecodeConfig(max_detections=2))) == 2
    batch = decode_batch(np.stack([raw, raw]), (16, 16), 2, DecodeConfig(iou_threshold=0.5))
    assert [d.classes.tolist() for d in batch] == [[0, 1, 1]] * 2


def test_decode_extremes_and_errors():
    raw = _tiny_raw()
    raw[6, :4] = 1000.0  # exp would overflow without the clamp
    raw[7, 5] = -1e30
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        dets = decode(raw, (16, 16), 2)
    np.testing.assert_allclose(dets.boxes[0], [0, 0, 16, 16])  # clipped to the frame
    with pytest.raises(DataError, match="P = 20"):
        decode(raw[:19], (16, 16), 2)
    raw[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        decode(raw, (16, 16), 2)
    with pytest.raises(ConfigError, match="iou_threshold"):
        DecodeConfig(iou_threshold=0.0)


def test_describe_is_json_ready():
    import json

    d = DecodeConfig().describe((16, 16), 2)
    json.dumps(d)
    assert d["output"]["points"] == 20
    assert d["output"]["levels"][1] == {"stride": 8, "rows": 2, "cols": 2, "first_point": 16,
                                        "num_points": 4}
    assert "IoU > 0.6" in d["nms"] and "per class" in d["nms"]


def test_to_original_and_coco_results():
    dets = Detections(np.array([[10, 20, 50, 60]], np.float32), np.array([0.123456], np.float32),
                      np.array([1]))
    back = to_original(dets, 0.5, (100, 90))
    np.testing.assert_allclose(back.boxes, [[20, 40, 90, 100]])  # x2 180 -> 90, y2 120 -> 100
    with pytest.raises(DataError, match="scale"):
        to_original(dets, 0.0, (100, 90))
    # the letterbox of a 100 x 90 picture at scale 0.5 fills input x < 45, y < 50; a box
    # wholly right of that clips to x1 = x2 = 90 and is dropped, the others keep their order
    three = Detections(np.array([[10, 20, 50, 60], [46, 0, 60, 30], [0, 0, 20, 10]], np.float32),
                       np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 0, 2]))
    kept = to_original(three, 0.5, (100, 90))
    np.testing.assert_allclose(kept.boxes, [[20, 40, 90, 100], [0, 0, 40, 20]])
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7]) and kept.classes.tolist() == [1, 2]
    dets.boxes[:] = [1.234, 2.0, 5.0, 7.5]
    res = coco_results([dets], [42], [3, 7])
    assert res == [{"image_id": 42, "category_id": 7, "bbox": [1.23, 2.0, 3.77, 5.5], "score": 0.12346}]
    with pytest.raises(DataError, match="0..0"):
        coco_results([dets], [42], [3])


# ----------------------------------------------------------------------------- COCO AP
def _coco_gt() -> dict:
    boxes = [  # image id, category id, xywh, iscrowd
        (5, 3, [10, 10, 10, 20], 0), (5, 7, [50, 40, 30, 30], 0),
        (9, 11, [5, 5, 40, 40], 0), (9, 3, [60, 60, 20, 20], 0), (9, 3, [0, 0, 100, 100], 1),
    ]
    anns = [{"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3],
             "iscrowd": crowd} for i, (im, c, b, crowd) in enumerate(boxes)]
    return {"images": [{"id": 5, "file_name": "a.jpg", "width": 100, "height": 100},
                       {"id": 9, "file_name": "b.jpg", "width": 120, "height": 110}],
            "annotations": anns,
            "categories": [{"id": i, "name": f"c{i}"} for i in (3, 7, 11)]}


def test_coco_ap_of_ground_truth_is_one():
    gt = _coco_gt()
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
              "score": 1.0} for a in gt["annotations"] if not a["iscrowd"]]
    m = evaluate_bbox(gt, preds)
    assert not m["no_results"]
    for k in ("AP", "AP50", "AP75", "APs", "APm", "AR1", "AR10", "AR100"):
        assert m[k] == pytest.approx(1.0), k  # the missing crowd box is not a miss
    # a detection on the crowd region is ignored, not a false positive
    crowd = [{"image_id": 9, "category_id": 3, "bbox": [0, 0, 100, 100], "score": 1.0}]
    assert evaluate_bbox(gt, preds + crowd)["AP"] == pytest.approx(1.0)
    # every ground-truth image is evaluated: an image without predictions counts as misses
    assert evaluate_bbox(gt, [p for p in preds if p["image_id"] == 9])["AR100"] < 1.0


def test_coco_empty_results_and_unknown_ids():
    m = evaluate_bbox(_coco_gt(), [])
    assert m["no_results"] and m["AP"] == 0.0 and m["AR100"] == 0.0
    with pytest.raises(DataError, match="image_id"):
        evaluate_bbox(_coco_gt(), [{"image_id": 6, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}])
    with pytest.raises(DataError, match="category_id"):
        evaluate_bbox(_coco_gt(), [{"image_id": 5, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 1}])


# ----------------------------------------------------------------------------- FCOS targets
def _fcos_gt() -> torch.Tensor:
    """64x64 input, 2 levels (16x16 points at stride 4: 0..255; 8x8 at stride 8: 256..319).

    Box 3 [4, 4, 28, 28] and box 1 [8, 8, 24, 24] share centre (16, 16); centre sampling
    (|d| < 6) leaves level-0 centres 14 and 18 for both, and the smaller box 1 wins.
    Box 2 [0, 0, 64, 48]: level-1 centres x in {28, 36}, y in {20, 28} (|d| < 12); their
    max distance 36 is in level 1's [32, inf). The crowd box [8, 8, 64, 64] ignores the
    rest of its inside.
    """
    gt = -torch.ones(2, 5, 6)
    gt[0, 0] = torch.tensor([4, 4, 28, 28, 1, 0])
    gt[0, 1] = torch.tensor([8, 8, 24, 24, 2, 0])
    gt[0, 2] = torch.tensor([0, 0, 64, 48, 0, 0])
    gt[0, 3] = torch.tensor([8, 8, 64, 64, 1, 1])
    return gt  # row 4 and all of image 1 are padding


def test_default_level_ranges():
    assert default_level_ranges(4) == [(0, 32), (32, 64), (64, 128), (128, math.inf)]
    assert default_level_ranges(1) == [(0, math.inf)]


def test_fcos_targets_hand_case():
    centres, strides = point_grid((64, 64), 2)
    cls, box, ctr = fcos_targets(_fcos_gt(), torch.from_numpy(centres), torch.from_numpy(strides),
                                 default_level_ranges(2))
    assert cls.shape == (2, 320) and box.shape == (2, 320, 4) and ctr.shape == (2, 320)
    small, large = [51, 52, 67, 68], [275, 276, 283, 284]  # rows/cols 3-4; level 1 rows 2-3, cols 3-4
    assert torch.nonzero(cls[0] >= 0).flatten().tolist() == small + large
    assert cls[0, small].tolist() == [2] * 4 and cls[0, large].tolist() == [0] * 4
    assert box[0, 51].tolist() == [6, 6, 10, 10] and box[0, 52].tolist() == [10, 6, 6, 10]
    assert box[0, 275].tolist() == [28, 20, 36, 28]  # centre (28, 20) in box 2
    assert ctr[0, 51].item() == pytest.approx(0.6)
    assert ctr[0, 275].item() == pytest.approx(math.sqrt(28 / 36 * 20 / 28))
    # crowd inside: 14 x 14 level-0 and 7 x 7 level-1 centres, less the 8 positives
    assert (cls[0] == IGNORE).sum().item() == 196 + 49 - 8
    assert cls[0, 0].item() == -1 and cls[0, 10 * 16 + 10].item() == IGNORE
    assert (box[0, cls[0] < 0] == 0).all() and (ctr[0, cls[0] < 0] == 0).all()
    assert (cls[1] == -1).all() and (box[1] == 0).all()
    with pytest.raises(ConfigError, match="level_ranges"):
        fcos_targets(_fcos_gt(), centres, strides, default_level_ranges(3))


# ----------------------------------------------------------------------------- loss
def test_det_loss_without_positives_is_finite():
    raw = torch.randn(2, 320, 8, requires_grad=True)
    total, parts = det_loss(raw, -torch.ones(2, 3, 6), (64, 64), 2)
    total.backward()
    assert torch.isfinite(total) and parts["num_pos"].item() == 0 and parts["giou"].item() == 0
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    total, _ = det_loss(torch.randn(1, 320, 8), torch.zeros(1, 0, 6), (64, 64), 2)
    assert torch.isfinite(total)


def _perfect_raw(gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    centres, strides = point_grid((64, 64), 2)
    cls, box, ctr = fcos_targets(gt, torch.from_numpy(centres), torch.from_numpy(strides),
                                 default_level_ranges(2))
    pos = cls >= 0
    raw = torch.zeros(gt.shape[0], 320, 5 + num_classes)
    raw[..., 5:] = -12.0
    raw[..., :4][pos] = torch.log(box[pos] / torch.from_numpy(strides).expand_as(cls)[pos][:, None])
    c = ctr[pos].clamp(1e-4, 1 - 1e-4)
    raw[..., 4][pos] = torch.log(c / (1 - c))
    raw[..., 5:][pos] = torch.where(torch.nn.functional.one_hot(cls[pos], num_classes) > 0, 12.0, -12.0)
    return raw


def test_det_loss_perfect_prediction():
    gt = _fcos_gt()
    total, parts = det_loss(_perfect_raw(gt, 3), gt, (64, 64), 2, range_bound=None)
    assert parts["num_pos"].item() == 8
    assert parts["giou"].item() < 1e-5
    random_total, _ = det_loss(torch.randn(2, 320, 8), gt, (64, 64), 2)
    assert total.item() < 0.05 * random_total.item()
    with pytest.raises(DataError, match="class index 2"):
        det_loss(torch.randn(2, 320, 7), gt, (64, 64), 2)  # C = 2 but box 1 is class 2


def test_range_term_is_zero_inside_the_bound_and_the_squared_excess_outside():
    gt = _fcos_gt()
    inside = _perfect_raw(gt, 3).clamp(-OUTPUT_RANGE_BOUND, OUTPUT_RANGE_BOUND)
    total, parts = det_loss(inside, gt, (64, 64), 2)
    free, _ = det_loss(inside, gt, (64, 64), 2, range_bound=None)
    assert parts["range"].item() == 0.0 and total.item() == free.item()
    outside = inside.clone()
    outside[1, 7, 4] = -20.0  # image 1 is all padding: no other part of the loss sees this point
    outside[0, 300, 6] = OUTPUT_RANGE_BOUND + 3.0
    total2, parts2 = det_loss(outside, gt, (64, 64), 2)
    excess = (20.0 - OUTPUT_RANGE_BOUND) ** 2 + 3.0 ** 2
    assert parts2["range"].item() == pytest.approx(RANGE_WEIGHT * excess / parts2["num_pos"].item(), rel=1e-5)


def test_range_term_pulls_an_untrained_output_back_under_adam():
    """A point whose outputs no other part of the loss trains (a negative's centerness)
    drifts nowhere on its own; the range term brings it back to the bound."""
    gt = _fcos_gt()[:1]
    raw = torch.nn.Parameter(_perfect_raw(gt, 3).clamp(-OUTPUT_RANGE_BOUND, OUTPUT_RANGE_BOUND))
    with torch.no_grad():
        raw[0, 250, 4] = -40.0  # level 0, far from every box: a negative
    opt = torch.optim.Adam([raw], lr=0.2)
    for _ in range(400):
        total, _ = det_loss(raw, gt, (64, 64), 2)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert -OUTPUT_RANGE_BOUND - 1.0 < raw[0, 250, 4].item() <= -OUTPUT_RANGE_BOUND + 0.2
    with torch.no_grad():
        raw[0, 250, 4] = -40.0
    opt.zero_grad()
    total, _ = det_loss(raw, gt, (64, 64), 2, range_bound=None)
    total.backward()
    assert raw.grad[0, 250, 4].item() == 0.0  # without it, nothing moves that point


def test_det_loss_decreases_under_adam():
    torch.manual_seed(0)
    gt = _fcos_gt()[:1]
    raw = torch.nn.Parameter(0.1 * torch.randn(1, 320, 8))
    opt = torch.optim.Adam([raw], lr=0.05)
    first = None
    for _ in range(200):
        total, _ = det_loss(raw, gt, (64, 64), 2)
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.2 * first


# ----------------------------------------------------------------------------- agreement
def _dets(boxes, scores, classes) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int64))


def test_detection_agreement_hand_cases():
    ref = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1])
    assert detection_agreement(ref, ref, 0.5) == (1.0, 1.0)
    d = 10 / 9  # shift giving IoU (10 - d) / (10 + d) = 0.8
    shifted = _dets([[d, 0, 10 + d, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1])
    assert box_iou(ref.boxes[:1], shifted.boxes[:1])[0, 0] == pytest.approx(0.8)
    assert detection_agreement(ref, shifted, 0.5) == (0.5, 0.5)
    swapped = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [1, 1])
    assert detection_agreement(ref, swapped, 0.5) == (0.5, 0.5)
    empty = _dets(np.zeros((0, 4)), [], [])
    assert detection_agreement(empty, empty, 0.5) == (1.0, 1.0)
    assert detection_agreement(ref, empty, 0.5) == (0.0, 1.0)
    # below the threshold on one side only still counts as reproduced
    low = _dets([[0, 0, 10, 10]], [0.45], [0])
    assert detection_agreement(_dets([[0, 0, 10, 10]], [0.55], [0]), low, 0.5) == (1.0, 1.0)
    # one-to-one: two reference boxes cannot both match one output box
    twice = _dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])
    assert detection_agreement(twice, _dets([[0, 0, 10, 10]], [0.9], [0]), 0.5) == (0.5, 1.0)
