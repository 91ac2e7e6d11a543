"""Classification data stack: the image-folder dataset, the generator and the metrics."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from hrnet_edge.data.classification import ImageFolderDataset, eval_transform
from hrnet_edge.data.synthetic_cls import generate_synthetic_imagefolder
from hrnet_edge.data.synthetic_cls_render import CLASS_NAMES
from hrnet_edge.errors import DataError
from hrnet_edge.evaluation.classification import (
    ClsEvalResult,
    confusion,
    evaluate_classification,
    per_class_accuracy,
    topk_accuracy,
)

SIZE = (32, 32)


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_layout(root, split="train", classes=("cat", "dog")):
    """A hand-made split: cat holds a .jpg and an upper-case .JPEG (both cv2), dog a
    grayscale and an RGBA PNG (PIL), plus files the loader must skip."""
    pixels = {}
    for name in classes:
        (root / split / name).mkdir(parents=True)
    if "cat" in classes:
        # Smooth colours: JPEG keeps them, so the channel order can be checked.
        pixels["cat/a.jpg"] = np.full((40, 60, 3), (200, 90, 20), np.uint8)
        pixels["cat/b.JPEG"] = np.full((50, 30, 3), (20, 90, 200), np.uint8)
        for rel in ("cat/a.jpg", "cat/b.JPEG"):
            cv2.imwrite(str(root / split / rel), pixels[rel][..., ::-1])
        (root / split / "cat" / "notes.txt").write_text("not an image")
        (root / split / "cat" / "._a.jpg").write_bytes(b"\x00\x05AppleDouble")
    if "dog" in classes:
        grey = _rgb(36, 36, 3)[..., 0]
        Image.fromarray(grey, "L").save(root / split / "dog" / "c.png")
        rgba = np.dstack([_rgb(30, 44, 4), np.full((30, 44), 7, np.uint8)])
        Image.fromarray(rgba, "RGBA").save(root / split / "dog" / "d.png")
        pixels["dog/c.png"], pixels["dog/d.png"] = np.dstack([grey] * 3), rgba[..., :3]
    return pixels


@pytest.fixture
def layout(tmp_path):
    return tmp_path, write_layout(tmp_path)


def test_hand_written_layout_loads(layout):
    root, pixels = layout
    ds = ImageFolderDataset(root, "train", SIZE, train=False)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2 and len(ds) == 4
    assert [p.name for p in ds.paths] == ["a.jpg", "b.JPEG", "c.png", "d.png"]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.validate() == 4
    jpeg = ds.read_image(0)
    assert jpeg.shape == (40, 60, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - pixels["cat/a.jpg"]).max() <= 4  # RGB, not BGR
    np.testing.assert_array_equal(ds.read_image(2), pixels["dog/c.png"])  # grey -> RGB
    np.testing.assert_array_equal(ds.read_image(3), pixels["dog/d.png"])  # alpha dropped
    image, label = ds[3]
    assert image.shape == (3, *SIZE) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    assert label.dtype == np.int64 and label == 1
    assert ds.stack_images([1, 2]).shape == (2, 3, *SIZE)


def test_val_split_uses_train_classes(layout):
    root, _ = layout
    train = ImageFolderDataset(root, "train", SIZE, train=True)
    write_layout(root, "val", classes=("dog", "cat"))
    val = ImageFolderDataset(root, "val", SIZE, train=False, class_names=train.class_names)
    assert val.class_names == ["cat", "dog"] and val.labels.tolist() == [0, 0, 1, 1]
    # The given order defines the labels, whatever the folders' order.
    swapped = ImageFolderDataset(root, "val", SIZE, train=False, class_names=["dog", "cat"])
    assert swapped.labels.tolist() == [0, 0, 1, 1] and swapped.paths[0].name == "c.png"
    (root / "val" / "bird").mkdir()
    Image.fromarray(_rgb(8, 8, 5)).save(root / "val" / "bird" / "x.png")
    with pytest.raises(DataError, match=r"folders \['bird', 'cat', 'dog'\], class_names "
                                        r"\['cat', 'dog'\].*not in class_names: \['bird'\]"):
        ImageFolderDataset(root, "val", SIZE, train=False, class_names=train.class_names)
    with pytest.raises(DataError, match=r"without a folder: \['fox'\]"):
        ImageFolderDataset(root, "train", SIZE, train=False, class_names=["cat", "dog", "fox"])
    with pytest.raises(DataError, match="plain folder names"):
        ImageFolderDataset(root, "train", SIZE, train=False, class_names=["cat", "../dog"])


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"root .* does not exist.*<root>/<split>/<class_name>"):
        ImageFolderDataset(tmp_path / "nope", "train", SIZE, train=False)
    write_layout(tmp_path)
    with pytest.raises(DataError, match=r"split folder .*val does not exist.*<class_name>"):
        ImageFolderDataset(tmp_path, "val", SIZE, train=False)
    (tmp_path / "empty_split").mkdir()
    with pytest.raises(DataError, match="holds no class folder"):
        ImageFolderDataset(tmp_path, "empty_split", SIZE, train=False)
    (tmp_path / "train" / "owl").mkdir()
    (tmp_path / "train" / "owl" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*owl holds no image.*<class_name>"):
        ImageFolderDataset(tmp_path, "train", SIZE, train=False)
    with pytest.raises(DataError, match="input_size"):
        ImageFolderDataset(tmp_path, "train", (0, 32), train=False)


def test_truncated_jpeg_names_the_file(layout):
    root, _ = layout
    path = root / "train" / "cat" / "a.jpg"
    path.write_bytes(path.read_bytes()[:300])
    ds = ImageFolderDataset(root, "train", SIZE, train=False)  # listing does not decode
    with pytest.raises(DataError, match=r"a\.jpg.*truncated"):
        ds[0]
    with pytest.raises(DataError, match=r"1 of 4 images .*cannot be decoded:\n .*a\.jpg"):
        ds.validate()
    assert ds.validate(max_items=0) == 0
    (root / "train" / "cat" / "b.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match=r"b\.JPEG"):
        ds.read_image(1)


def test_symlinks_outside_are_refused(tmp_path):
    root = tmp_path / "data"
    write_layout(root)
    outside = tmp_path / "secret.png"
    Image.fromarray(_rgb(8, 8, 6)).save(outside)
    link = root / "train" / "cat" / "z.png"
    os.symlink(outside, link)
    with pytest.raises(DataError, match=r"z\.png resolves to .*secret\.png, outside"):
        ImageFolderDataset(root, "train", SIZE, train=False)
    link.unlink()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "train" / "fox")
    with pytest.raises(DataError, match=r"fox resolves to .*elsewhere, outside"):
        ImageFolderDataset(root, "train", SIZE, train=False)
    (root / "train" / "fox").unlink()
    # A link that stays inside the split is fine.
    os.symlink(root / "train" / "dog" / "c.png", root / "train" / "cat" / "c_link.png")
    assert len(ImageFolderDataset(root, "train", SIZE, train=False)) == 5


def test_eval_transform_shapes_and_crop():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :, 0] = np.arange(200)[None, :] // 2  # column position, readable after resizing
    for shape in ((100, 200), (200, 100), (31, 33), (7, 300)):
        for size in ((32, 32), (24, 40)):
            out = eval_transform(cv2.resize(img, shape[::-1]), size, 0.875)
            assert out.shape == (*size, 3) and out.dtype == np.uint8
    # 100x200 to 32x32 at ratio 0.5: short side to 64 (64x128), the centre 32x32.
    out = eval_transform(img, (32, 32), 0.5)
    expected = cv2.resize(img, (128, 64), interpolation=cv2.INTER_AREA)[16:48, 48:80]
    np.testing.assert_array_equal(out, expected)
    assert abs(float(out[..., 0].mean()) - 50) < 1.5  # the centre columns of a 0..99 ramp


def test_eval_items_deterministic(layout):
    root, _ = layout
    ds = ImageFolderDataset(root, "train", (24, 40), train=False)
    a = ds.stack_images()
    ds.set_epoch(3)
    np.testing.assert_array_equal(a, ds.stack_images())
    np.testing.assert_array_equal(a[2], ds[2][0])
    assert a.shape == (4, 3, 24, 40)


def test_train_augmentation_reproducible(layout):
    root, _ = layout

    def views(seed, epoch, flip=True):
        ds = ImageFolderDataset(root, "train", SIZE, train=True, seed=seed, flip=flip)
        ds.set_epoch(epoch)
        return np.stack([ds[i][0] for i in range(len(ds))])

    a = views(0, 0)
    assert a.shape == (4, 3, *SIZE) and a.dtype == np.float32
    np.testing.assert_array_equal(a, views(0, 0))
    assert not np.array_equal(a, views(0, 1))
    assert not np.array_equal(a, views(1, 0))
    # The flip draw is made either way: without flips each crop is the same or mirrored.
    b = views(0, 0, flip=False)
    for x, y in zip(a, b):
        assert np.array_equal(x, y) or np.array_equal(x, y[:, :, ::-1])
    # Eval views of a train dataset are never augmented.
    ds = ImageFolderDataset(root, "train", SIZE, train=True)
    ds.set_epoch(5)
    np.testing.assert_array_equal(ds.stack_images([0]),
                                  ImageFolderDataset(root, "train", SIZE, False).stack_images([0]))


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


GEN = dict(num_train_per_class=4, num_val_per_class=2, image_size=(48, 40), num_classes=3)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls") / "synth"
    return generate_synthetic_imagefolder(root, seed=3, workers=1, **GEN)


def test_generator_layout_and_loading(generated):
    root = generated["root"]
    assert set(generated) == {"root", "train", "val", "generator"}
    train = ImageFolderDataset(root, "train", SIZE, train=True)
    assert train.class_names == sorted(CLASS_NAMES[:3])
    val = ImageFolderDataset(root, "val", SIZE, train=False, class_names=train.class_names)
    assert np.bincount(train.labels).tolist() == [4, 4, 4]
    assert np.bincount(val.labels).tolist() == [2, 2, 2]
    assert train.validate() == 12 and train.read_image(0).shape == (48, 40, 3)
    assert train[0][0].shape == (3, *SIZE)


def test_generator_deterministic_and_reused(generated, tmp_path):
    again = generate_synthetic_imagefolder(tmp_path / "b", seed=3, workers=2, **GEN)
    ref = _tree_bytes(generated["root"])
    assert _tree_bytes(again["root"]) == ref  # same bytes, whatever the worker count
    other = generate_synthetic_imagefolder(tmp_path / "c", seed=4, workers=1, **GEN)
    assert _tree_bytes(other["root"]) != ref
    stamp = (again["train"] / "circle" / "circle_00001.jpg").stat().st_mtime_ns
    generate_synthetic_imagefolder(tmp_path / "b", seed=3, reuse_only=True, **GEN)
    generate_synthetic_imagefolder(tmp_path / "b", seed=3, **GEN)
    assert (again["train"] / "circle" / "circle_00001.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match=r"different seed \(seed=3\).*\(seed=5\)"):
        generate_synthetic_imagefolder(tmp_path / "b", seed=5, reuse_only=True, **GEN)
    with pytest.raises(DataError, match="missing"):
        generate_synthetic_imagefolder(tmp_path / "none", seed=3, reuse_only=True, **GEN)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not written by the synthetic classification"):
        generate_synthetic_imagefolder(tmp_path / "foreign", **GEN)
    assert (tmp_path / "foreign" / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.parametrize("bad", [dict(num_classes=1), dict(num_classes=21),
                                 dict(image_size=(16, 48)), dict(image_size=(48,)),
                                 dict(num_train_per_class=0), dict(num_val_per_class=1.5),
                                 dict(seed=-1), dict(workers=0)])
def test_generator_rejects_bad_parameters(tmp_path, bad):
    with pytest.raises(DataError):
        generate_synthetic_imagefolder(tmp_path / "x", **{**GEN, **bad})
    assert not (tmp_path / "x").exists()


def test_topk_hand_computed():
    logits = np.array([[0.1, 0.7, 0.2],    # label 1: rank 0
                       [0.5, 0.3, 0.2],    # label 2: rank 2
                       [0.4, 0.4, 0.2],    # label 1, tied with class 0 (lower index first): rank 1
                       [0.4, 0.4, 0.2]])   # label 0, tied: rank 0
    labels = np.array([1, 2, 1, 0])
    assert topk_accuracy(logits, labels, ks=(1, 2, 3, 5)) == {
        "top1": 0.5, "top2": 0.75, "top3": 1.0, "top5": 1.0}
    assert topk_accuracy(np.zeros((4, 3)), np.array([0, 1, 2, 0])) == {"top1": 0.5, "top5": 1.0}
    nan = np.array([[np.nan, 0.0, -1.0]])
    assert topk_accuracy(nan, np.array([0]), ks=(1, 2)) == {"top1": 0.0, "top2": 0.0}
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(logits, np.array([1, 2, 3, 0]))


def test_confusion_and_per_class():
    pred, labels = np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 1])
    np.testing.assert_array_equal(confusion(pred, labels, 4),
                                  [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    acc = per_class_accuracy(pred, labels, 4)
    np.testing.assert_allclose(acc[:3], [1.0, 0.5, 0.5])
    assert np.isnan(acc[3])


class IndexDataset:
    """Images that carry their own index in pixel (0, 0, 0), for exact fake models."""

    def __init__(self, labels, num_classes):
        self.labels, self.num_classes = np.asarray(labels, np.int64), num_classes

    def __len__(self):
        return len(self.labels)

    def stack_images(self, indices):
        out = np.zeros((len(indices), 3, 4, 4), np.float32)
        out[:, 0, 0, 0] = np.asarray(indices) / 1000.0
        return out


def _oracle(ds, wrong=(), calls=None):
    """Perfect logits, except items in ``wrong`` put their true class second."""
    def infer(x):
        if calls is not None:
            calls.append(x.shape[0])
        idx = np.round(x[:, 0, 0, 0] * 1000).astype(int)
        logits = np.zeros((len(idx), ds.num_classes), np.float32)
        for row, i in enumerate(idx):
            lab = ds.labels[i]
            logits[row, lab] = 2.0
            if i in wrong:
                logits[row, (lab + 1) % ds.num_classes] = 3.0
        return logits
    return infer


def test_evaluate_classification_fake_models():
    ds = IndexDataset(np.arange(10) % 7, 7)
    res = evaluate_classification(_oracle(ds), ds, batch_size=4, keep_logits=True)
    assert isinstance(res, ClsEvalResult)
    assert res.metrics == {"top1": 1.0, "top5": 1.0, "num_images": 10.0}
    assert res.logits.shape == (10, 7) and res.logits.dtype == np.float32
    assert res.pred.dtype == np.int64 and res.pred.tolist() == ds.labels.tolist()
    res = evaluate_classification(_oracle(ds, wrong={0, 3, 9}), ds)
    assert res.metrics["top1"] == pytest.approx(0.7) and res.metrics["top5"] == 1.0
    assert res.logits is None and res.pred[3] == 4
    calls = []
    res = evaluate_classification(_oracle(ds, wrong={3}, calls=calls), ds, fixed_batch=1)
    assert calls == [1] * 10 and res.metrics["top1"] == pytest.approx(0.9)
    calls = []
    res = evaluate_classification(_oracle(ds, calls=calls), ds, fixed_batch=4, max_images=5)
    assert calls == [4, 4] and res.labels.tolist() == [0, 2, 4, 6, 1]  # spread: 0, 2, 4, 6, 8
    with pytest.raises(DataError, match="7 class scores but the dataset has 5"):
        evaluate_classification(_oracle(ds), IndexDataset(np.arange(10) % 5, 5))


def test_evaluate_on_image_folder(generated):
    train = ImageFolderDataset(generated["root"], "val", SIZE, train=False)
    images = train.stack_images()
    table = {img.tobytes(): lab for img, lab in zip(images, train.labels)}

    def infer(x):
        return np.eye(train.num_classes, dtype=np.float32)[[table[i.tobytes()] for i in x]]

    res = evaluate_classification(infer, train, batch_size=4)
    assert res.metrics == {"top1": 1.0, "top5": 1.0, "num_images": 6.0}
