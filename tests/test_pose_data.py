"""Pose data stack: heatmaps, affine crops, flips, the COCO loader and the generator."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from torch.utils.data import default_collate

from hrnet_edge.data import (
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    OKS_SIGMAS,
    SKELETON,
    CocoKeypoints,
    affine_points,
    decode_heatmaps,
    gaussian_targets,
    generate_synthetic_pose,
    get_affine_transform,
    heatmap_to_input,
)
from hrnet_edge.data.heatmaps import input_to_heatmap, warp_crop
from hrnet_edge.errors import DataError

K = 17


def _person(ann_id, image_id, box, rng, **extra):
    x, y, w, h = box
    pts = np.stack([rng.uniform(x + 2, x + w - 2, K), rng.uniform(y + 2, y + h - 2, K)], 1)
    kps = np.concatenate([pts, np.full((K, 1), 2.0)], 1)
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
           "keypoints": [round(float(v), 2) for v in kps.reshape(-1)], "num_keypoints": K,
           "bbox": list(box), "area": float(w * h)}
    ann.update(extra)
    return ann


def make_coco(tmp_path, write_images=True):
    """Two images; 3 usable people, plus a crowd, an empty and a non-person annotation."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    images = [{"id": 1, "file_name": "a.jpg", "height": 120, "width": 160},
              {"id": 2, "file_name": "b.jpg", "height": 120, "width": 160}]
    anns = [_person(1, 1, (20, 10, 50, 100), rng), _person(2, 1, (90, 20, 40, 80), rng),
            _person(3, 2, (-10, 30, 60, 120), rng),  # crosses the image border: clipped
            _person(4, 2, (80, 10, 30, 60), rng, iscrowd=1),
            _person(5, 2, (60, 40, 20, 30), rng, num_keypoints=0, keypoints=[0] * (3 * K)),
            _person(6, 2, (10, 10, 30, 30), rng, category_id=3)]
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(KEYPOINT_NAMES),
                            "skeleton": [[a + 1, b + 1] for a, b in SKELETON]}]}
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(data))
    if write_images:
        for im in images:
            pixels = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
            cv2.imwrite(str(img_dir / im["file_name"]), pixels)
    return ann_file, img_dir, data


# --- heatmaps and affine transforms ---------------------------------------------------

def test_constants_are_coco():
    assert len(KEYPOINT_NAMES) == 17 and len(SKELETON) == 19 and len(OKS_SIGMAS) == 17
    for a, b in FLIP_PAIRS:
        assert KEYPOINT_NAMES[a].replace("left", "right") == KEYPOINT_NAMES[b]


def test_heatmap_round_trip_is_subpixel():
    rng = np.random.default_rng(1)
    input_size, hm_size = (128, 96), (32, 24)
    joints = np.stack([rng.uniform(8, 88, K), rng.uniform(8, 120, K)], 1)
    target, weight = gaussian_targets(joints, np.full(K, 2), input_size, hm_size, sigma=2.0)
    assert target.shape == (K, 32, 24) and target.dtype == np.float32 and weight.min() == 1
    coords, maxvals = decode_heatmaps(target[None], "quarter")
    err = np.abs(heatmap_to_input(coords[0], input_size, hm_size) - joints) / 4.0
    assert err.max() <= 0.26  # the quarter-pixel refinement, in heatmap pixels
    assert maxvals.min() > 0.88


def test_dark_decoding_recovers_the_centre():
    """On an ideal target the log of the (blurred) map is exactly quadratic, so DARK
    returns the true centre, not the quarter-pixel approximation."""
    rng = np.random.default_rng(2)
    input_size, hm_size = (128, 96), (32, 24)
    # Peaks at least 3 sigma from the border: there the edge-replicated blur is exact.
    joints = np.stack([rng.uniform(26, 70, K), rng.uniform(26, 102, K)], 1)
    target, _ = gaussian_targets(joints, np.full(K, 2), input_size, hm_size, sigma=2.0)
    truth = input_to_heatmap(joints, input_size, hm_size)
    dark, peak = decode_heatmaps(target[None], "dark", sigma=2.0)
    quarter, _ = decode_heatmaps(target[None], "quarter")
    assert np.abs(dark[0] - truth).max() < 1e-3
    assert np.abs(quarter[0] - truth).max() > 0.05  # the baseline really is coarser
    np.testing.assert_allclose(peak[0, :, 0], target.reshape(K, -1).max(1))
    # Noise on the map: DARK stays closer than the quarter shift on average.
    noisy = target + rng.normal(0, 0.02, target.shape).astype(np.float32)
    d = np.abs(decode_heatmaps(noisy[None], "dark")[0][0] - truth).mean()
    q = np.abs(decode_heatmaps(noisy[None], "quarter")[0][0] - truth).mean()
    assert d < q


def test_dark_decoding_edge_cases():
    hm = np.zeros((1, 3, 16, 12), np.float32)
    hm[0, 1, 0, 0] = 1.0  # a peak in the corner: no refinement, integer position
    hm[0, 2, 5, 6] = 1.0  # a single hot pixel: symmetric, stays put
    coords, peak = decode_heatmaps(hm, "dark")
    assert np.isfinite(coords).all()
    np.testing.assert_allclose(coords[0, 1], [0, 0])
    np.testing.assert_allclose(coords[0, 2], [6, 5], atol=1e-6)
    assert peak[0, 0, 0] == 0 and peak[0, 2, 0] == 1
    with pytest.raises(ValueError, match="valid: dark, quarter"):
        decode_heatmaps(hm, "soft-argmax")


def test_heatmap_weights_follow_visibility_and_bounds():
    joints = np.array([[10.0, 10.0], [10.0, 10.0], [-20.0, 5.0], [50.0, 300.0]])
    target, weight = gaussian_targets(joints, np.array([2, 0, 2, 1]), (64, 64), sigma=2.0)
    assert weight[:, 0].tolist() == [1, 0, 0, 0]
    assert target[1:].max() == 0
    # Exactly on a heatmap pixel centre the peak is 1 at that pixel.
    t, _ = gaussian_targets(np.array([[4 * 5 + 1.5, 4 * 7 + 1.5]]), np.array([2]), (64, 64))
    assert t[0, 7, 5] == pytest.approx(1.0)


def test_affine_inverse_maps_back_exactly():
    mat = get_affine_transform((70.3, 41.9), (55.0, 73.3), 23.0, (128, 96))
    inv = get_affine_transform((70.3, 41.9), (55.0, 73.3), 23.0, (128, 96), inverse=True)
    pts = np.array([[0.0, 0.0], [70.3, 41.9], [101.7, 3.2]])
    np.testing.assert_allclose(affine_points(affine_points(pts, mat), inv), pts, atol=1e-9)
    np.testing.assert_allclose(affine_points(np.array([70.3, 41.9]), mat), [47.5, 63.5], atol=1e-9)


def test_warp_crop_puts_pixel_where_affine_says():
    img = np.zeros((100, 120, 3), np.uint8)
    img[30, 50] = 255
    mat = get_affine_transform((60.0, 40.0), (48.0, 64.0), 0.0, (128, 96))  # 2x zoom
    crop = warp_crop(img, mat, (128, 96))
    x, y = affine_points(np.array([50.0, 30.0]), mat)
    yy, xx = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    assert abs(xx - x) <= 0.5 and abs(yy - y) <= 0.5


# --- the COCO loader ------------------------------------------------------------------

def test_loader_shapes_and_skips(tmp_path):
    ann_file, img_dir, _ = make_coco(tmp_path)
    ds = CocoKeypoints(ann_file, img_dir, input_size=(128, 96), train=True, seed=0)
    assert len(ds) == 3  # crowd, empty and non-person annotations are skipped
    assert [i["ann_id"] for i in ds.instances] == [1, 2, 3]
    assert ds.instances[2]["bbox"].tolist() == [0, 30, 50, 90]  # clipped to the image
    image, target, weight, meta = ds[0]
    assert image.shape == (3, 128, 96) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5
    assert target.shape == (K, 32, 24) and target.dtype == np.float32
    assert weight.shape == (K, 1) and weight.dtype == np.float32
    batch = default_collate([ds[i] for i in range(3)])
    assert tuple(batch[0].shape) == (3, 3, 128, 96) and tuple(batch[3]["center"].shape) == (3, 2)
    stacked = ds.stack_images([0, 2])
    assert stacked.shape == (2, 3, 128, 96) and stacked.dtype == np.float32


def test_val_crop_aspect_and_padding(tmp_path):
    ann_file, img_dir, _ = make_coco(tmp_path)
    ds = CocoKeypoints(ann_file, img_dir, input_size=(128, 96))
    inst = ds.instances[0]  # box 50 x 100 -> aspect 0.75 -> 75 x 100, padded 1.25
    np.testing.assert_allclose(inst["scale"], [93.75, 125.0])
    np.testing.assert_allclose(inst["center"], [45.0, 60.0])
    _, target, weight, _ = ds[0]
    coords, _ = decode_heatmaps(target[None])
    mat = get_affine_transform(inst["center"], inst["scale"], 0, (128, 96))
    joints_in = affine_points(inst["joints"], mat)
    err = np.abs(heatmap_to_input(coords[0], (128, 96), (32, 24)) - joints_in)
    assert weight.min() == 1 and err.max() <= 1.05


def test_flip_swaps_left_and_right(tmp_path):
    ann_file, img_dir, _ = make_coco(tmp_path)
    ds = CocoKeypoints(ann_file, img_dir, input_size=(128, 96), train=True)
    plain, joints, vis, _ = ds.crop(0)
    ds._augment = lambda rng: (1.0, 0.0, True)  # force a flip, nothing else
    flipped, fjoints, fvis, _ = ds.crop(0, augment=True)
    assert np.abs(flipped.astype(int) - plain[:, ::-1].astype(int)).max() <= 1
    for a, b in FLIP_PAIRS:  # the left wrist of the flipped crop is the mirrored right wrist
        np.testing.assert_allclose(fjoints[a], [95 - joints[b][0], joints[b][1]], atol=1e-4)
        np.testing.assert_allclose(fjoints[b], [95 - joints[a][0], joints[a][1]], atol=1e-4)
    np.testing.assert_allclose(fjoints[0], [95 - joints[0][0], joints[0][1]], atol=1e-4)


def test_augmentation_varies_between_samples(tmp_path):
    ann_file, img_dir, _ = make_coco(tmp_path)
    ds = CocoKeypoints(ann_file, img_dir, input_size=(128, 96), train=True, seed=3)
    a, b = ds[0][0], ds[0][0]
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("annotations"), "annotations"),
    (lambda d: d["annotations"][0].pop("keypoints"), "lacks"),
    (lambda d: d["annotations"][0].update(keypoints=[1, 2, 2]), "keypoint values"),
    (lambda d: d["annotations"][0].update(image_id=99), "not in 'images'"),
    (lambda d: d["images"][0].pop("file_name"), "file_name"),
])
def test_malformed_annotations_raise(tmp_path, mutate, message):
    ann_file, img_dir, data = make_coco(tmp_path)
    mutate(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        CocoKeypoints(ann_file, img_dir)


def test_bad_json_missing_file_and_images_raise(tmp_path):
    with pytest.raises(DataError, match="not found"):
        CocoKeypoints(tmp_path / "nope.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        CocoKeypoints(bad, tmp_path)
    ann_file, img_dir, _ = make_coco(tmp_path, write_images=False)
    with pytest.raises(DataError, match="missing"):
        CocoKeypoints(ann_file, img_dir)


# --- the synthetic generator ----------------------------------------------------------

def _small(root, **kw):
    args = dict(num_train=4, num_val=2, image_size=(96, 128), seed=5, workers=1)
    args.update(kw)
    return generate_synthetic_pose(root, **args)


def test_generator_is_deterministic_and_valid_coco(tmp_path):
    from pycocotools.coco import COCO

    a, b = _small(tmp_path / "a"), _small(tmp_path / "b", workers=2)
    assert a["train_ann"].read_bytes() == b["train_ann"].read_bytes()
    for img in sorted(a["val_images"].iterdir()):
        assert img.read_bytes() == (b["val_images"] / img.name).read_bytes()
    coco = COCO(str(a["train_ann"]))
    assert len(coco.getImgIds()) == 4 and coco.loadCats(1)[0]["keypoints"] == list(KEYPOINT_NAMES)
    assert coco.loadCats(1)[0]["skeleton"][0] == [16, 14]  # 1-based, as COCO
    for ann in coco.dataset["annotations"]:
        kps = np.array(ann["keypoints"]).reshape(K, 3)
        assert set(kps[:, 2].tolist()) <= {0, 1, 2}
        assert (kps[kps[:, 2] == 0, :2] == 0).all()
        assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
        assert ann["iscrowd"] == 0 and ann["category_id"] == 1 and ann["area"] > 0
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 96
    ds = CocoKeypoints(a["val_ann"], a["val_images"], input_size=(64, 48))
    assert len(ds) >= 2


def test_generator_is_idempotent_and_atomic(tmp_path):
    paths = _small(tmp_path / "d")
    stamp = paths["train_ann"].stat().st_mtime_ns
    assert _small(tmp_path / "d")["train_ann"].stat().st_mtime_ns == stamp  # reused
    _small(tmp_path / "d", seed=6)  # other parameters: regenerated in place
    assert json.loads(paths["generator"].read_text())["seed"] == 6
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folder left behind
    user = tmp_path / "user"
    user.mkdir()
    (user / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="not written by"):
        _small(user)


def test_later_stages_never_regenerate(tmp_path):
    """reuse_only (every stage after training): a dataset this code would now draw
    differently is an error, not silently new validation images under a trained model."""
    with pytest.raises(DataError, match="run the train stage first"):
        _small(tmp_path / "r", reuse_only=True)
    assert not (tmp_path / "r").exists()
    paths = _small(tmp_path / "r")
    stamp = paths["val_ann"].stat().st_mtime_ns
    assert _small(tmp_path / "r", reuse_only=True) == paths  # same parameters: reused
    with pytest.raises(DataError, match=r"different seed \(seed=5\).*seed=6"):
        _small(tmp_path / "r", seed=6, reuse_only=True)
    assert paths["val_ann"].stat().st_mtime_ns == stamp


def test_generator_rejects_bad_parameters(tmp_path):
    with pytest.raises(DataError, match="image_size"):
        generate_synthetic_pose(tmp_path / "x", num_train=1, num_val=1, image_size=(8, 8))
    assert not (tmp_path / "x").exists()
