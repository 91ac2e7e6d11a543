"""Pose evaluation: OKS AP via COCOeval, PCK, agreement, batching and flip testing."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hrnet_edge.data import KEYPOINT_NAMES, CocoKeypoints, flip_heatmaps, flip_permutation
from hrnet_edge.errors import DataError
from hrnet_edge.evaluation import (
    evaluate_pose,
    keypoint_agreement,
    oks_ap,
    pck,
    predict_heatmaps,
    to_coco_results,
)

K = 17


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three images, five large people with keypoints well inside their boxes."""
    tmp = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    boxes = {1: [(10, 10, 60, 120), (90, 20, 60, 110)], 2: [(40, 5, 70, 130)],
             3: [(5, 15, 55, 100), (100, 10, 50, 120)]}
    images, anns = [], []
    for image_id, bxs in boxes.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 144, "width": 160})
        pixels = rng.integers(0, 255, (144, 160, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp / f"{image_id}.png"), pixels)
        for x, y, w, h in bxs:
            pts = np.stack([rng.uniform(x + 4, x + w - 4, K), rng.uniform(y + 4, y + h - 4, K)], 1)
            vis = np.where(rng.random(K) < 0.2, 1, 2)
            kps = np.concatenate([pts, vis[:, None]], 1).reshape(-1)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "keypoints": [round(float(v), 2) for v in kps], "num_keypoints": K,
                         "bbox": [x, y, w, h], "area": float(w * h) * 0.6})
    ann_file = tmp / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "person", "keypoints": list(KEYPOINT_NAMES), "skeleton": []}]}))
    return CocoKeypoints(ann_file, tmp, input_size=(128, 96))


def _gt(ds):
    arr = ds.instance_arrays()
    kps = np.concatenate([arr["joints"], np.ones((len(ds), K, 1))], -1)
    return arr, kps


def test_oks_ap_is_one_for_ground_truth_and_drops_when_perturbed(dataset):
    arr, kps = _gt(dataset)
    metrics = oks_ap(to_coco_results(kps, arr["image_id"], np.ones(len(dataset))), dataset.coco)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    noisy = kps.copy()
    noisy[..., :2] += np.random.default_rng(1).normal(0, 8.0, noisy[..., :2].shape)
    bad = oks_ap(to_coco_results(noisy, arr["image_id"], np.ones(len(dataset))), dataset.coco)
    assert bad["AP"] < 0.5
    # The same through the annotation file path.
    again = oks_ap(to_coco_results(kps, arr["image_id"], np.ones(len(dataset))), dataset.ann_file)
    assert again["AP"] == pytest.approx(1.0)


def test_oks_ap_errors_and_empty(tmp_path, dataset):
    assert oks_ap([], dataset.coco)["AP"] == 0.0
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(DataError, match="not valid JSON"):
        oks_ap([{"image_id": 1, "category_id": 1, "keypoints": [0] * 51, "score": 1}], bad)


def test_pck_known_answers():
    gt = np.zeros((1, 5, 2))
    pred = np.array([[[0, 0], [4, 0], [0, 6], [20, 0], [0, 1]]], dtype=float)
    vis = np.array([[2, 1, 2, 2, 0]])  # the last keypoint is unlabelled: not counted
    assert pck(pred, gt, vis, np.array([100.0]), 0.05) == pytest.approx(0.5)
    assert pck(pred, gt, vis, np.array([100.0]), 0.1) == pytest.approx(0.75)
    assert np.isnan(pck(pred, gt, np.zeros((1, 5)), np.array([100.0]), 0.1))


def test_keypoint_agreement_known_answer():
    a = np.zeros((2, 2, 3))
    b = a.copy()
    b[0, 0, 0] = 3.0   # within 0.05 * 100
    b[1, 1, 1] = 30.0  # far off
    assert keypoint_agreement(a, b, np.array([100.0, 100.0])) == pytest.approx(0.75)
    assert keypoint_agreement(a, b, np.array([100.0, 100.0]), alpha=0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        keypoint_agreement(a, b[:1], np.array([100.0]))


def _oracle(ds):
    """An 'infer' that returns the ground-truth target heatmaps, in dataset order."""
    targets = np.stack([ds[i][1] for i in range(len(ds))])
    state = {"next": 0}

    def infer(x):
        n = x.shape[0]
        out = targets[state["next"]:state["next"] + n]
        state["next"] += n
        if out.shape[0] < n:  # padded calls: repeat the last map
            out = np.concatenate([out, np.repeat(out[-1:], n - out.shape[0], 0)])
        return out
    return infer, targets


@pytest.mark.parametrize("batch_size, pad_last", [(1, False), (2, False), (4, True), (32, False)])
def test_evaluate_pose_with_oracle_heatmaps(dataset, batch_size, pad_last):
    infer, _ = _oracle(dataset)
    res = evaluate_pose(infer, dataset, batch_size=batch_size, pad_last=pad_last,
                        keep_heatmaps=True)
    assert res.keypoints.shape == (5, K, 3) and res.heatmaps.shape == (5, K, 32, 24)
    assert res.metrics["AP"] > 0.95 and res.metrics["PCK@0.05"] == pytest.approx(1.0)
    assert res.metrics["num_instances"] == 5
    arr = dataset.instance_arrays()
    err = np.abs(res.keypoints[..., :2] - arr["joints"])
    hm_pixel = 4 * arr["scale"][:, 0] / 96  # one heatmap pixel in image pixels
    err = err / hm_pixel[:, None, None]
    # DARK (the default): exact on ideal maps except within ~3 sigma of the border,
    # where the edge-replicated smoothing bends the map (still under a quarter pixel).
    assert err.max() <= 0.26 and np.median(err) < 0.01
    quarter = evaluate_pose(_oracle(dataset)[0], dataset, batch_size=batch_size,
                            pad_last=pad_last, decoder="quarter")
    q_err = np.abs(quarter.keypoints[..., :2] - arr["joints"]) / hm_pixel[:, None, None]
    assert q_err.max() <= 0.26 and np.median(q_err) > 5 * np.median(err)


def test_evaluate_pose_subset_and_bad_output(dataset):
    infer, _ = _oracle(dataset)
    res = evaluate_pose(infer, dataset, max_images=1)
    assert res.metrics["num_instances"] == 2 and set(res.image_ids.tolist()) == {1}
    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        evaluate_pose(lambda x: np.zeros((x.shape[0], K)), dataset)


def test_flip_test_is_pixel_aligned():
    # A flip-equivariant "model": every joint's heatmap is the 4x4-pooled red channel.
    def infer(x):
        pooled = x[:, 0].reshape(x.shape[0], 32, 4, 24, 4).mean(axis=(2, 4))
        return np.repeat(pooled[:, None], K, axis=1)

    images = np.random.default_rng(0).random((3, 3, 128, 96), dtype=np.float32)
    perm = flip_permutation()
    plain = predict_heatmaps(infer, images, batch_size=2)
    flipped = predict_heatmaps(infer, images, batch_size=2, flip_perm=perm)
    np.testing.assert_allclose(flipped, plain, atol=1e-6)  # no one-pixel shift needed


def test_flip_heatmaps_swaps_sides():
    hm = np.zeros((1, K, 4, 6), np.float32)
    hm[0, 9, 1, 0] = 1.0  # left wrist at the left edge
    out = flip_heatmaps(hm, flip_permutation())
    assert out[0, 10, 1, 5] == 1.0 and out.sum() == 1.0
