"""Segmentation data stack: Cityscapes and mask-folder loaders, augmentation, the
synthetic street generator, and the mIoU metric with its evaluation loop."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from hrnet_edge.data.segmentation import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE,
                                          LABEL_ID_TO_TRAIN_ID, SegDataset, cityscapes_pairs,
                                          load_cityscapes, load_mask_folder)
from hrnet_edge.data.synthetic_seg import generate_synthetic_cityscapes
from hrnet_edge.data.synthetic_seg_render import FLAT_COLOURS
from hrnet_edge.data.synthetic_seg_scene import render_street
from hrnet_edge.errors import DataError
from hrnet_edge_runtime.errors import UsageError
from hrnet_edge.evaluation.segmentation import (confusion_matrix, evaluate_segmentation,
                                                seg_metrics, upsample_logits)


def _png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def _city_pair(root, split, city, stem, rgb, label_ids):
    _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
         np.ascontiguousarray(rgb[..., ::-1]))
    _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)


def _hand_cityscapes(root):
    """Two 24x32 images: left half road (labelId 7), right half car (26), the top two
    rows unlabeled (0) and one 4x4 block of sky (23) in the second image."""
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:] = (0, 0, 255)
    ids = np.full((24, 32), 7, np.uint8)
    ids[:, 16:] = 26
    ids[:2] = 0
    _city_pair(root, "val", "bonn", "bonn_000000_000019", rgb, ids)
    ids2 = ids.copy()
    ids2[4:8, 4:8] = 23
    _city_pair(root, "val", "aachen", "aachen_000001_000019", rgb, ids2)
    return ids, ids2


def _mask_folder(root, masks, images=None, classes=("bg", "cat", "dog")):
    """Generic layout with classes.txt; ``masks`` maps stem -> HxW uint8 ids."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n\n")
    for stem, m in masks.items():
        img = images[stem] if images is not None else np.full(m.shape + (3,), 90, np.uint8)
        _png(root / "images" / "train" / f"{stem}.png", np.ascontiguousarray(img[..., ::-1]))
        _png(root / "masks" / "train" / f"{stem}.png", m)
    return root


# --------------------------------------------------------------------------- loaders

def test_label_id_lut_matches_cityscapes():
    lut = LABEL_ID_TO_TRAIN_ID
    assert lut.shape == (256,) and lut.dtype == np.uint8
    hand = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
            24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id, train_id in hand.items():
        assert lut[label_id] == train_id
    for label_id in (0, 1, 4, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 255):  # ignored ids
        assert lut[label_id] == 255
    assert sorted(lut[lut != 255].tolist()) == list(range(19))
    assert len(CITYSCAPES_CLASSES) == len(CITYSCAPES_PALETTE) == 19
    assert CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_PALETTE[0] == (128, 64, 128)


def test_cityscapes_layout_loads_and_maps(tmp_path):
    ids, ids2 = _hand_cityscapes(tmp_path)
    ds = load_cityscapes(tmp_path, "val", (24, 32))
    assert len(ds) == 2 and ds.num_classes == 19 and ds.class_names[0] == "road"
    assert ds.pairs[0][0].name.startswith("aachen")  # sorted by city
    image, label = ds[1]
    assert image.shape == (3, 24, 32) and image.dtype == np.float32
    assert label.shape == (24, 32) and label.dtype == np.int64
    np.testing.assert_array_equal(label, LABEL_ID_TO_TRAIN_ID[ids].astype(np.int64))
    assert image[0, 5, 3] == 1.0 and image[2, 5, 3] == 0.0  # RGB order: red on the left
    assert set(np.unique(ds[0][1]).tolist()) == {0, 10, 13, 255}
    raw = ds.read_label(0)
    assert raw.dtype == np.uint8 and raw[5, 5] == 10 and raw[0, 0] == 255
    assert ds.read_image(0).shape == (24, 32, 3)
    small = load_cityscapes(tmp_path, "val", (12, 16))
    labels = small.stack_labels([0, 1])
    assert labels.shape == (2, 12, 16) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels[0], LABEL_ID_TO_TRAIN_ID[ids2[::2, ::2]])
    images = small.stack_images([0, 1])
    assert images.shape == (2, 3, 12, 16) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    stats = ds.validate()
    assert stats["items"] == 2 and stats["ignore_pixels"] == 2 * 2 * 32
    assert stats["class_pixels"][10] == 16


def test_mask_folder_layout_with_classes_txt_and_json(tmp_path):
    m = np.zeros((16, 20), np.uint8)
    m[4:8] = 1
    m[8:12] = 2
    m[12:] = 255
    root = _mask_folder(tmp_path / "ds", {"b": m, "a": m[:, ::-1].copy()})
    ds = load_mask_folder(root, "train", (16, 20))
    assert ds.class_names == ["bg", "cat", "dog"] and ds.num_classes == 3
    assert len(ds.palette) == 3 and ds.palette[0] == (0, 0, 0) and len(set(ds.palette)) == 3
    assert [p[0].name for p in ds.pairs] == ["a.png", "b.png"]
    np.testing.assert_array_equal(ds[1][1], m)
    (root / "classes.json").write_text(json.dumps(
        {"classes": ["x", "y", "z"], "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}))
    ds = load_mask_folder(root, "train", (8, 10))
    assert ds.class_names == ["x", "y", "z"] and ds.palette[2] == (7, 8, 9)
    # A palette-mode (VOC-style) PNG holds indices, not colours.
    pal = Image.fromarray(m, mode="L").convert("P")
    pal.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * 759)
    pal.save(root / "masks" / "train" / "a.png")
    np.testing.assert_array_equal(ds.read_label(0), m)


@pytest.mark.parametrize("case, pattern", [
    ("missing_folder", r"leftImg8bit.*val"),
    ("no_images", r"no Cityscapes images"),
    ("missing_mask", r"lack their labelIds mask.*gtFine_labelIds\.png"),
])
def test_cityscapes_layout_errors(tmp_path, case, pattern):
    if case != "missing_folder":
        (tmp_path / "leftImg8bit" / "val" / "bonn").mkdir(parents=True)
        (tmp_path / "gtFine" / "val" / "bonn").mkdir(parents=True)
    if case == "missing_mask":
        _png(tmp_path / "leftImg8bit" / "val" / "bonn" / "bonn_0_1_leftImg8bit.png",
             np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=pattern):
        cityscapes_pairs(tmp_path, "val")


def test_item_errors_name_file_and_valid_values(tmp_path):
    m = np.zeros((16, 20), np.uint8)
    root = _mask_folder(tmp_path, {"ok": m, "big": m, "range": m, "badimg": m, "badmask": m})
    _png(root / "masks" / "train" / "big.png", np.zeros((12, 20), np.uint8))
    bad = m.copy()
    bad[3, 3] = 7
    _png(root / "masks" / "train" / "range.png", bad)
    (root / "images" / "train" / "badimg.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "masks" / "train" / "badmask.png").write_bytes(b"garbage")
    ds = load_mask_folder(root, "train", (16, 20))
    names = [p[0].stem for p in ds.pairs]
    with pytest.raises(DataError, match=r"big\.png is 20x12 but its image .*20x16"):
        ds[names.index("big")]
    with pytest.raises(DataError, match=r"range\.png holds values 7 outside .* 0\.\.2 .*255"):
        ds[names.index("range")]
    with pytest.raises(DataError, match=r"badimg\.png is corrupt"):
        ds[names.index("badimg")]
    with pytest.raises(DataError, match=r"badmask\.png is corrupt"):
        ds.stack_labels([names.index("badmask")])
    with pytest.raises(DataError, match=r"badimg|big"):
        ds.validate()
    assert ds.validate(max_items=0)["items"] == 0
    (root / "masks" / "train" / "ok.png").unlink()
    with pytest.raises(DataError, match=r"lack their mask.*ok\.png"):
        load_mask_folder(root, "train", (16, 20))
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"classes\.txt"):
        load_mask_folder(root, "train", (16, 20))


def test_dataset_arguments_are_checked(tmp_path):
    pairs = [(tmp_path / "a.png", tmp_path / "a_mask.png")]
    with pytest.raises(DataError, match=r"palette must hold 2"):
        SegDataset(pairs, ["a", "b"], [(0, 0, 0)], (8, 8))
    with pytest.raises(DataError, match=r"ignore_index must lie in 3\.\.255"):
        SegDataset(pairs, ["a", "b", "c"], None, (8, 8), ignore_index=2)
    with pytest.raises(DataError, match=r"256-entry"):
        SegDataset(pairs, ["a"], None, (8, 8), label_map=np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match=r"scale_range"):
        SegDataset(pairs, ["a"], None, (8, 8), scale_range=(1.5, 1.0))
    with pytest.raises(DataError, match=r"at least one"):
        SegDataset([], ["a"], None, (8, 8))
    with pytest.raises(DataError, match=r"cannot read image .*a\.png"):
        SegDataset(pairs, ["a"], None, (8, 8)).read_image(0)


def _square_dataset(tmp_path, **kw):
    """One 60x90 image: grey background (class 0) and a green square (class 2) off-centre."""
    img = np.full((60, 90, 3), 60, np.uint8)
    m = np.zeros((60, 90), np.uint8)
    img[12:40, 10:40] = (0, 255, 0)
    m[12:40, 10:40] = 2
    root = _mask_folder(tmp_path, {"sq": m}, {"sq": img})
    return load_mask_folder(root, "train", (48, 64), train=True, **kw)


def test_train_augmentation_keeps_alignment_and_is_reproducible(tmp_path):
    ds = _square_dataset(tmp_path, scale_range=(0.7, 1.6), seed=3)
    flips, padded = set(), False
    for epoch in range(12):
        ds.set_epoch(epoch)
        image, label = ds[0]
        assert image.shape == (3, 48, 64) and label.shape == (48, 64)
        green = (image[1] > 0.5) & (image[0] < 0.2)
        square = label == 2
        union = (green | square).sum()
        assert union == 0 or (green & square).sum() / union > 0.85, epoch
        pad = label == 255
        padded |= bool(pad.any())
        assert (image[:, pad] == 0).all()  # padding: black image, ignored label
        if square.any():
            xs = np.nonzero(square.any(0))[0]
            flips.add(bool(xs.mean() > 32 + 8))  # the square starts on the left
    assert flips == {False, True} and padded
    ds.set_epoch(5)
    again = _square_dataset(tmp_path / "again", scale_range=(0.7, 1.6), seed=3)
    again.set_epoch(5)
    for a, b in zip(ds[0], again[0]):
        np.testing.assert_array_equal(a, b)
    again.set_epoch(6)
    assert not np.array_equal(ds[0][0], again[0][0])
    other = _square_dataset(tmp_path / "other", scale_range=(0.7, 1.6), seed=4)
    other.set_epoch(5)
    assert not np.array_equal(ds[0][0], other[0][0])
    ds.train = False
    np.testing.assert_array_equal(ds[0][0], ds.stack_images([0])[0])


# --------------------------------------------------------------------------- generator

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    kw = dict(num_train=4, num_val=2, image_size=(64, 128), seed=7)
    return base, kw, generate_synthetic_cityscapes(base / "a", workers=1, **kw)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_generator_is_deterministic_and_reused(synth):
    base, kw, paths = synth
    other = generate_synthetic_cityscapes(base / "b", workers=2, **kw)
    a, b = _files(paths["root"]), _files(other["root"])
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)  # worker count is irrelevant
    assert sum(k.endswith("_leftImg8bit.png") for k in a) == 6
    assert json.loads(a["generator.json"])["seed"] == 7
    marker = paths["root"] / "leftImg8bit" / "marker"
    marker.write_text("x")
    assert generate_synthetic_cityscapes(base / "a", **kw) == paths
    assert generate_synthetic_cityscapes(base / "a", reuse_only=True, **kw) == paths
    assert marker.exists()  # reused, not rebuilt
    marker.unlink()
    with pytest.raises(DataError, match=r"different seed"):
        generate_synthetic_cityscapes(base / "a", reuse_only=True, **{**kw, "seed": 8})
    with pytest.raises(DataError, match=r"missing"):
        generate_synthetic_cityscapes(base / "none", reuse_only=True, **kw)
    (base / "foreign").mkdir()
    (base / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(DataError, match=r"not written by"):
        generate_synthetic_cityscapes(base / "foreign", **kw)
    for bad in ({"image_size": (32, 128)}, {"num_train": -1}, {"seed": -1}):
        with pytest.raises(DataError, match=r"invalid synthetic segmentation parameters"):
            generate_synthetic_cityscapes(base / "c", **{**kw, **bad})


def test_generated_labels_are_valid_and_load(synth):
    _, _, paths = synth
    drawn = set(FLAT_COLOURS)
    ds = load_cityscapes(paths["root"], "train", (32, 64), train=True)
    assert len(ds) == 4 and len(load_cityscapes(paths["root"], "val", (32, 64))) == 2
    ignore = total = 0
    for i in range(len(ds)):
        raw = cv2.imread(str(ds.pairs[i][1]), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(raw).tolist()) <= drawn
        mapped = LABEL_ID_TO_TRAIN_ID[raw]
        ignore, total = ignore + int((mapped == 255).sum()), total + mapped.size
        assert ds[i][0].shape == (3, 32, 64)
    assert 0 < ignore / total < 0.15
    stats = ds.validate()
    assert (stats["class_pixels"] > 0).sum() >= 8  # most classes appear even in 4 images


def test_rendered_labels_match_drawn_pixels():
    for i in range(3):
        img, lab = render_street(np.random.default_rng([1, i]), (96, 192))
        flat, flat_lab = render_street(np.random.default_rng([1, i]), (96, 192), flat=True)
        np.testing.assert_array_equal(lab, flat_lab)  # texture never moves a shape
        table = np.zeros((256, 3), np.uint8)
        for label_id, colour in FLAT_COLOURS.items():
            table[label_id] = colour
        np.testing.assert_array_equal(flat, table[flat_lab])
        assert img.dtype == np.uint8 and img.shape == (96, 192, 3) and img.std() > 10


# --------------------------------------------------------------------------- metrics

def test_confusion_matrix_and_metrics_by_hand():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    conf = confusion_matrix(pred, gt, 4)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = expected[0, 1] = expected[2, 0] = 1
    expected[1, 1] = 2
    np.testing.assert_array_equal(conf, expected)
    m = seg_metrics(conf, ["a", "b", "c", "d"])
    assert m["per_class_IoU"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0, "d": None})
    assert m["mIoU"] == pytest.approx(1 / 3) and m["absent_classes"] == ["d"]
    assert m["pixel_acc"] == pytest.approx(3 / 5) and m["mean_acc"] == pytest.approx(0.5)
    assert m["num_pixels"] == 5
    # Predicted but never in the ground truth: IoU 0, and it counts in the mean.
    m = seg_metrics(confusion_matrix(np.array([0, 3]), np.array([0, 0]), 4))
    assert m["per_class_IoU"]["3"] == 0.0 and m["mIoU"] == pytest.approx(0.25)
    with pytest.raises(UsageError, match="shape"):
        confusion_matrix(pred[:1], gt, 4)
    with pytest.raises(UsageError, match=r"0\.\.3"):
        confusion_matrix(pred, np.where(gt == 2, 9, gt), 4)


def test_upsample_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 150, 7, 9)).astype(np.float32)
    for size in ((28, 36), (20, 30), (7, 9)):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                              align_corners=False).numpy()
        np.testing.assert_allclose(upsample_logits(x, size), ref, atol=1e-5)


def _band_dataset(tmp_path):
    """Two 16x32 images of horizontal bands; pixel value 40*(class+1) encodes the class.

    Image 0: rows 0-7 class 0, rows 8-15 class 1. Image 1: rows 0-7 class 2, rows 8-11
    class 1, rows 12-15 ignored.
    """
    bands = [np.repeat([0, 1], 8), np.concatenate([np.repeat([2], 8), [1] * 4, [255] * 4])]
    masks, images = {}, {}
    for k, rows in enumerate(bands):
        masks[f"im{k}"] = np.repeat(np.asarray(rows, np.uint8)[:, None], 32, 1)
        cls = np.where(masks[f"im{k}"] == 255, 0, masks[f"im{k}"])
        images[f"im{k}"] = np.repeat((40 * (cls + 1)).astype(np.uint8)[..., None], 3, 2)
    return load_mask_folder(_mask_folder(tmp_path, masks, images), "train", (16, 32))


def _band_infer(mistake=None, batch_of=None):
    def infer(x):
        assert batch_of is None or x.shape[0] == batch_of
        cls = np.rint(x[:, 0, 1::4, 1::4] * 255 / 40).astype(int) - 1
        if mistake is not None:
            cls = np.where(cls == mistake[0], mistake[1], cls)
        return (cls[:, None] == np.arange(3)[None, :, None, None]).astype(np.float32)
    return infer


def test_evaluate_segmentation_perfect_and_known_error(tmp_path):
    ds = _band_dataset(tmp_path)
    res = evaluate_segmentation(_band_infer(), ds, batch_size=2, keep_logits=True)
    assert res.metrics["mIoU"] == 1.0 and res.metrics["pixel_acc"] == 1.0
    assert res.labels_pred.shape == (2, 16, 32) and res.labels_pred.dtype == np.uint8
    assert res.logits.shape == (2, 3, 4, 8)
    # Class 2 predicted as 0: IoU0 = 256 / (256 + 512 - 256), IoU1 = 1, IoU2 = 0.
    res = evaluate_segmentation(_band_infer(mistake=(2, 0)), ds, batch_size=1)
    assert res.metrics["per_class_IoU"] == pytest.approx({"bg": 0.5, "cat": 1.0, "dog": 0.0})
    assert res.metrics["mIoU"] == pytest.approx(0.5)
    assert res.metrics["pixel_acc"] == pytest.approx(640 / 896)
    one = evaluate_segmentation(_band_infer(mistake=(2, 0), batch_of=1), ds, fixed_batch=1)
    assert one.metrics == res.metrics
    padded = evaluate_segmentation(_band_infer(batch_of=4), ds, batch_size=3, fixed_batch=4)
    assert padded.metrics["mIoU"] == 1.0
    assert evaluate_segmentation(_band_infer(), ds, max_images=1).metrics["num_images"] == 1


def test_flip_test_averages_with_mirrored_logits(tmp_path):
    ds = _band_dataset(tmp_path)
    ramp = np.linspace(-1, 1, 8, dtype=np.float32)

    def pooled(x):  # flip-equivariant: 4x4 mean of the image, per class channel
        n, _, h, w = x.shape
        p = x[:, :1].reshape(n, 1, h // 4, 4, w // 4, 4).mean((3, 5))
        return np.concatenate([p, -p, 0.5 * p], 1)

    plain = evaluate_segmentation(pooled, ds, keep_logits=True)
    flipped = evaluate_segmentation(pooled, ds, keep_logits=True, flip_test=True)
    np.testing.assert_allclose(flipped.logits, plain.logits, atol=1e-6)
    # Not equivariant: a left-to-right ramp; flip testing leaves its symmetric part (0).
    skewed = evaluate_segmentation(lambda x: pooled(x) + ramp, ds, keep_logits=True,
                                   flip_test=True)
    np.testing.assert_allclose(skewed.logits, plain.logits, atol=1e-6)
