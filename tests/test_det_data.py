"""Detection data stack: the COCO instances loader (letterbox, targets, augmentation,
validation) and the synthetic COCO-instances generator."""
from __future__ import annotations

import dataclasses
import contextlib
import io
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from hrnet_edge.data.coco_instances import PAD_VALUE, CocoInstances, load_coco_instances
from hrnet_edge.data.synthetic_det import generate_synthetic_coco_instances
from hrnet_edge.data.synthetic_det_render import CATEGORIES, render_image
from hrnet_edge.errors import DataError

GREY = PAD_VALUE / 255.0


def _png(path, h, w, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return pixels[..., ::-1]  # RGB


def _hand_coco(root):
    """Three images (40x20, 20x40 in a sub-folder, 30x30 without boxes), categories
    with ids 7, 2, 4 (listed out of order), a crowd region and one degenerate box."""
    img_dir = root / "images"
    rgb = {"a": _png(img_dir / "a.png", 20, 40, 0), "b": _png(img_dir / "sub" / "b.png", 40, 20, 1)}
    _png(img_dir / "c.png", 30, 30, 2)
    crowd_mask = np.zeros((40, 20), np.uint8)
    crowd_mask[4:14, 2:10] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd_mask))
    data = {
        "images": [{"id": 10, "file_name": "a.png", "width": 40, "height": 20},
                   {"id": 20, "file_name": "sub/b.png", "width": 20, "height": 40},
                   {"id": 30, "file_name": "c.png", "width": 30, "height": 30}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"},
                       {"id": 4, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [4, 2, 10, 6], "area": 60, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [0, 0, 40, 20], "area": 800, "iscrowd": 0},
            {"id": 3, "image_id": 20, "category_id": 4, "bbox": [2, 4, 8, 10], "area": 80, "iscrowd": 1,
             "segmentation": {"size": [40, 20], "counts": rle["counts"].decode("ascii")}},
            {"id": 4, "image_id": 20, "category_id": 2, "bbox": [5, 5, 0.5, 8], "area": 4, "iscrowd": 0},
            {"id": 5, "image_id": 20, "category_id": 7, "bbox": [1.5, 2.5, 4, 4], "area": 16, "iscrowd": 0},
        ]}
    ann = root / "instances.json"
    ann.write_text(json.dumps(data))
    return ann, img_dir, data, rgb


@pytest.fixture
def hand(tmp_path):
    return _hand_coco(tmp_path)


def _rows(targets):
    return targets[targets[:, 4] >= 0]


def test_loader_letterbox_and_targets(hand, capsys):
    ann, img_dir, _, rgb = hand
    ds = CocoInstances(ann, img_dir, input_size=(60, 60))
    assert ds.category_ids == [2, 4, 7] and ds.class_names == ["cat", "bird", "dog"]
    assert ds.num_classes == 3 and ds.image_ids == [10, 20, 30] and len(ds) == 3
    assert ds.summary == {"images": 3, "annotations": 4, "crowd": 1, "negatives": 1,
                          "dropped": {"degenerate": 1, "outside_image": 0}}
    image, targets = ds[0]
    assert image.shape == (3, 60, 60) and image.dtype == np.float32
    assert targets.shape == (100, 6) and targets.dtype == np.float32
    # 40x20 image, scale min(60/20, 60/40) = 1.5, top-left placement: boxes * 1.5.
    np.testing.assert_allclose(_rows(targets), [[6, 3, 21, 12, 2, 0], [0, 0, 60, 30, 0, 0]])
    assert (targets[2:] == -1).all()
    assert np.allclose(image[:, 30:], GREY) and not np.allclose(image[:, :30], GREY)
    expected = cv2.resize(rgb["a"], (60, 30), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(image[:, :30].transpose(1, 2, 0), expected / 255.0, atol=1e-6)
    assert ds.letterbox_info(0) == {"image_id": 10, "orig_hw": (20, 40), "scale": 1.5, "pad": (0, 0)}
    # Image 20 (20 wide, 40 high): objects first, then the crowd region with its flag.
    _, targets = ds[1]
    np.testing.assert_allclose(_rows(targets), [[2.25, 3.75, 8.25, 9.75, 2, 0], [3, 6, 15, 21, 1, 1]])
    _, targets = ds[2]
    assert (targets == -1).all()  # a negative image is kept
    boxes = _rows(ds[1][1])[:, :4] / ds.letterbox_info(1)["scale"]
    np.testing.assert_allclose(boxes[1], [2, 4, 10, 14])  # maps back by the scale alone
    assert ds.stack_images([0, 1]).shape == (2, 3, 60, 60)
    assert ds.validate() == {"items": 3, "ok": 3, "bad": []}
    capsys.readouterr()
    assert sorted(ds.coco.getCatIds()) == [2, 4, 7] and len(ds.coco.getAnnIds()) == 5
    assert capsys.readouterr().out == ""  # pycocotools' index message is swallowed
    np.testing.assert_array_equal(ds.read_image(1), rgb["b"])


def _mutate(data, fn):
    data = json.loads(json.dumps(data))
    fn(data)
    return data


def _set_ann(key, value, index=0):
    return lambda d: d["annotations"][index].__setitem__(key, value)


@pytest.mark.parametrize("change, match", [
    (_set_ann("bbox", [1, 2, float("nan"), 3]), r"annotation 1 has bbox .*4 finite numbers"),
    (_set_ann("bbox", [1, 2, 3]), r"annotation 1 has bbox"),
    (_set_ann("bbox", [1, 2, -3, 3]), r"annotation 1 .*negative width"),
    (_set_ann("category_id", 99), r"annotation 1 has category_id 99.*valid: \[2, 4, 7\]"),
    (_set_ann("image_id", 77), r"annotation 1 refers to image 77"),
    (_set_ann("iscrowd", 2), r"annotation 1 has iscrowd 2"),
    (_set_ann("id", 2), r"annotation id 2 appears twice"),
    (lambda d: d["images"][0].__setitem__("file_name", "../x.jpg"), r"image 10 .*'\.\./x\.jpg'.*leaves"),
    (lambda d: d["images"][0].__setitem__("file_name", "/etc/x.jpg"), r"image 10 .*absolute"),
    (lambda d: d.pop("categories"), r"lacks a non-empty 'categories'"),
    (lambda d: d["annotations"][0].pop("bbox"), r"annotation 1 lacks \['bbox'\]"),
])
def test_loader_rejects_bad_annotations(hand, change, match):
    ann, img_dir, data, _ = hand
    ann.write_text(json.dumps(_mutate(data, change)))
    with pytest.raises(DataError, match=match) as err:
        CocoInstances(ann, img_dir)
    assert str(ann) in str(err.value)


def test_loader_rejects_bad_files(hand, tmp_path):
    ann, img_dir, data, _ = hand
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="must hold a JSON object"):
        CocoInstances(tmp_path / "list.json", img_dir)
    os.remove(img_dir / "sub" / "b.png")
    with pytest.raises(DataError, match=r"1 image file\(s\) .*missing.*sub/b\.png"):
        CocoInstances(ann, img_dir)
    (img_dir / "sub" / "b.png").write_bytes(b"not a png")
    ds = CocoInstances(ann, img_dir)
    with pytest.raises(DataError, match=r"b\.png is corrupt"):
        ds[1]
    report = ds.validate()
    assert report["ok"] == 2 and [b["image_id"] for b in report["bad"]] == [20]
    with pytest.raises(DataError, match=r"instances_val\.json.*images/val"):
        load_coco_instances(tmp_path, "val", (64, 64))
    _png(img_dir / "sub" / "b.png", 41, 20, 1)  # one row more than the JSON says
    with pytest.raises(DataError, match=r"b\.png \(id 20\) is 20x41 but .* gives 20x40"):
        CocoInstances(ann, img_dir).read_image(1)


def test_train_augmentation_keeps_boxes_in_frame(hand):
    ann, img_dir, _, _ = hand
    ds = CocoInstances(ann, img_dir, input_size=(48, 64), train=True, scale_range=(0.5, 2.0), seed=3)
    for epoch in range(12):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            image, targets = ds[i]
            assert image.shape == (3, 48, 64)
            rows = _rows(targets)
            assert ((rows[:, 0] >= 0) & (rows[:, 2] <= 64) & (rows[:, 1] >= 0) & (rows[:, 3] <= 48)).all()
            assert ((rows[:, 2] - rows[:, 0] >= 2) & (rows[:, 3] - rows[:, 1] >= 2)).all()
    ds.set_epoch(5)
    a, b = ds[0], ds[0]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # reproducible per (seed, epoch, i)
    ds.set_epoch(6)
    assert not np.array_equal(a[0], ds[0][0])


def test_train_flip_mirrors_exactly(hand):
    ann, img_dir, _, rgb = hand
    # Input = image size and scale 1: no resize or offset, so only the flip changes things.
    kw = dict(input_size=(20, 40), train=True, scale_range=(1.0, 1.0), seed=1)
    plain, flipping = CocoInstances(ann, img_dir, flip=False, **kw), CocoInstances(ann, img_dir, **kw)
    seen = set()
    for epoch in range(8):
        plain.set_epoch(epoch)
        flipping.set_epoch(epoch)
        (img0, t0), (img1, t1) = plain[0], flipping[0]
        np.testing.assert_allclose(img0.transpose(1, 2, 0), rgb["a"] / 255.0, atol=1e-6)
        np.testing.assert_allclose(_rows(t0), [[4, 2, 14, 8, 2, 0], [0, 0, 40, 20, 0, 0]])
        flipped = not np.array_equal(img0, img1)
        seen.add(flipped)
        if flipped:
            np.testing.assert_array_equal(img1, img0[:, :, ::-1])
            r0, r1 = _rows(t0), _rows(t1)
            np.testing.assert_allclose(r1[:, 0], 40 - r0[:, 2])
            np.testing.assert_allclose(r1[:, 2], 40 - r0[:, 0])
            np.testing.assert_allclose(r1[:, [1, 3, 4, 5]], r0[:, [1, 3, 4, 5]])
    assert seen == {True, False}


def test_images_kept_in_memory_give_the_same_items(hand):
    ann, img_dir, _, rgb = hand
    kw = dict(input_size=(48, 64), train=True, scale_range=(0.5, 2.0), seed=3)
    files, memory = CocoInstances(ann, img_dir, **kw), CocoInstances(ann, img_dir, **kw)
    need = 20 * 40 * 3 + 40 * 20 * 3 + 30 * 30 * 3
    assert memory.keep_in_memory(need - 1) == 0 and memory._decoded is None  # too large: nothing kept
    assert memory.keep_in_memory(need) == need
    (img_dir / "a.png").unlink()  # from now on only the memory has it
    np.testing.assert_array_equal(memory.read_image(0), rgb["a"])
    assert not memory.read_image(0).flags.writeable  # no caller can change what the next one reads
    with pytest.raises(DataError, match="a.png"):
        files.read_image(0)
    _png(img_dir / "a.png", 20, 40, 0)
    for epoch in (0, 3):
        files.set_epoch(epoch)
        memory.set_epoch(epoch)
        for i in range(len(files)):
            for x, y in zip(files[i], memory[i]):
                np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(files.stack_images(), memory.stack_images())


def test_keep_decoded_shares_one_budget_between_the_splits(hand):
    from hrnet_edge.training.loop import keep_decoded

    ann, img_dir, _, _ = hand
    a, b = CocoInstances(ann, img_dir), CocoInstances(ann, img_dir)
    one = 20 * 40 * 3 * 2 + 30 * 30 * 3
    assert keep_decoded((a, b, object()), max_bytes=one + 100) == one  # b does not fit in what is left
    assert a._decoded is not None and b._decoded is None


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "synthetic"
    generate_synthetic_coco_instances(root, num_train=40, num_val=10, image_size=(256, 256), seed=0)
    return root


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_and_reused(synth, tmp_path):
    files = _tree_bytes(synth)
    assert "annotations/instances_train.json" in files and "images/val/000002000010.jpg" in files
    assert sum(k.startswith("images/train/") for k in files) == 40
    again = tmp_path / "again"
    # Other worker count, same bytes: each image draws from its own seed.
    generate_synthetic_coco_instances(again, num_train=40, num_val=10, seed=0, workers=2)
    assert _tree_bytes(again) == files
    stamp = (synth / "generator.json").stat().st_mtime_ns
    generate_synthetic_coco_instances(synth, num_train=40, num_val=10, seed=0, reuse_only=True)
    assert (synth / "generator.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="seed"):
        generate_synthetic_coco_instances(synth, num_train=40, num_val=10, seed=1, reuse_only=True)
    other = tmp_path / "other"
    generate_synthetic_coco_instances(other, num_train=3, num_val=0, seed=1)
    assert (other / "images/train/000001000001.jpg").read_bytes() != files["images/train/000001000001.jpg"]


# pycocotools' decode still passes copy=False to np.array, which numpy 2 warns about.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_generator_loads_and_annotations_are_tight(synth):
    ds = load_coco_instances(synth, "train", (256, 256), train=True)
    assert ds.category_ids == [c["id"] for c in CATEGORIES] == [1, 3, 5, 7, 9, 11]
    assert ds.summary["images"] == 40 and ds.summary["annotations"] > 80
    assert ds.validate(5) == {"items": 5, "ok": 5, "bad": []}
    image, targets = ds[0]
    assert image.shape == (3, 256, 256) and _rows(targets).shape[0] >= 1
    data = json.loads((synth / "annotations/instances_train.json").read_text())
    assert {im["file_name"] for im in data["images"]} == {f"{im['id']:012d}.jpg" for im in data["images"]}
    by_image: dict = {}
    for a in data["annotations"]:
        rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        np.testing.assert_allclose(mask_utils.toBbox(rle), a["bbox"], atol=1.0)
        assert mask_utils.area(rle) == a["area"] >= 30
        assert a["segmentation"]["size"] == [256, 256]
        by_image.setdefault(a["image_id"], []).append(mask_utils.decode(rle))
    for masks in by_image.values():  # visible masks never overlap
        assert np.stack(masks).sum(0).max() == 1


def test_generator_covers_area_ranges_and_crowds():
    areas, crowds = [], 0
    for i in range(160):
        _, anns = render_image(np.random.default_rng([0, 0, i]), (256, 256))
        areas += [a["area"] for a in anns if not a["iscrowd"]]
        crowds += sum(a["iscrowd"] for a in anns)
    a = np.array(areas)
    shares = [(a < 32 ** 2).mean(), ((a >= 32 ** 2) & (a < 96 ** 2)).mean(), (a >= 96 ** 2).mean()]
    assert all(s > 0.15 for s in shares), shares
    assert crowds >= 2 and len(a) > 3 * 160


def test_synthetic_ground_truth_scores_perfectly_with_cocoeval(synth):
    from pycocotools.cocoeval import COCOeval

    ds = load_coco_instances(synth, "val", (256, 256))
    gt = ds.coco
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"] if not a["iscrowd"]]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] > 0.99


def test_loader_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, hrnet_edge.data.coco_instances, hrnet_edge.data.synthetic_det; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_built_in_data_renders_on_every_core(monkeypatch, tmp_path):
    """[data] workers is the loader's; rendering takes up to 2 processes whatever it says,
    as the pose, segmentation and classification generators do."""
    from hrnet_edge.data import synthetic_det
    from hrnet_edge.runconfig import load_run_config

    used = []
    monkeypatch.setattr(synthetic_det.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(synthetic_det, "run_jobs", lambda fn, jobs, workers: (used.append(workers), [fn(j) for j in jobs])[1])
    cfg = load_run_config(None, model="hrnet_w8_det")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=1, synthetic_train_images=2,
                                                            synthetic_val_images=1))
    cfg.task.generate(tmp_path / "d", cfg, reuse_only=False)
    assert used and set(used) == {2}
    generate_synthetic_coco_instances(tmp_path / "e", num_train=2, num_val=1, workers=3)
    assert used[-1] == 3
