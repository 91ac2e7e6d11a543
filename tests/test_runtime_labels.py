"""``hrnet-edge-run --images DIR --labels FILE``: the task metric on a device.

Per task, a small model is exported to ONNX fp32 with the project's converters and run
on a few labelled pictures of the project's synthetic generators. Three checks each:

* the runtime's metric code equals the host's (``hrnet_edge.evaluation``) on identical
  predictions: the runtime's own decoded outputs, and predictions made from the ground
  truth (perfect, then perturbed, so the metric is not a trivial 0);
* the runtime reads the labels as the host's loaders do (crops, letterbox scales,
  class ids, label maps);
* end to end through ``hrnet_edge_runtime.cli.main``: a valid result whose metric is
  the host evaluation's of the same artifact on the same pictures within the stated
  tolerance (the runtime prepares inputs with numpy, the host with OpenCV: pixels
  differ by a grey level here and there). Untrained models score near 0, so the
  decoded predictions themselves are compared with the host's too.

Plus bad input: one line on stderr, exit 2, no file.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPORT_BLOCKER, runner_exit2

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("pycocotools", reason="pycocotools is not installed")
cv2 = pytest.importorskip("cv2", reason="opencv is not installed")

from hrnet_edge_runtime import labelled as L  # noqa: E402
from hrnet_edge_runtime import transforms as T  # noqa: E402
from hrnet_edge_runtime.cli import main as run_cli  # noqa: E402
from hrnet_edge_runtime.metadata import load_artifact  # noqa: E402
from hrnet_edge_runtime.result import validate_result  # noqa: E402

pytestmark = pytest.mark.export

RUN = ["--warmup", "1", "--iterations", "2", "--threads", "2", "--label", "ci"]
# the stated tolerances between the device metric and the host's on the same artifact
POSE_AP_TOL, DET_AP_TOL, SEG_MIOU_TOL = 0.02, 0.02, 0.01


def _export(model, task_info: dict, out: Path, **options) -> Path:
    from converters.base import ExportJob
    from converters.metadata import base_metadata
    from converters.registry import get_target

    job = ExportJob(model=model, precision="fp32", out_dir=out, metadata=base_metadata(model, task_info, "ab" * 32),
                    options=options)
    return get_target("onnx").export(job).path.parent


def _ort(art: Path):
    """The artifact on ONNX Runtime: the host evaluation's callable (NCHW float32 batch ->
    raw output), and the ``run`` the labelled sets take (one input array -> raw output)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]


def _cli(art: Path, images: Path, labels: Path, out: Path) -> dict:
    assert run_cli([str(art), "--images", str(images), "--labels", str(labels), *RUN, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    validate_result(result)
    return result




def _same(a: dict, b: dict, keys) -> None:
    for k in keys:
        assert a[k] == pytest.approx(b[k], abs=1e-12), k


# --- pose ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pose(tmp_path_factory, settled_pose_model):
    from hrnet_edge.data.coco_keypoints import CocoKeypoints
    from hrnet_edge.data.keypoints import CROP_PADDING, FLIP_PAIRS, KEYPOINT_NAMES, SKELETON
    from hrnet_edge.data.synthetic_pose import generate_synthetic_pose

    root = tmp_path_factory.mktemp("labels_pose")
    paths = generate_synthetic_pose(root / "data", num_train=0, num_val=6, image_size=(160, 120), seed=7,
                                    workers=1)
    info = {"crop_padding": CROP_PADDING, "keypoint_names": list(KEYPOINT_NAMES),
            "skeleton": [list(p) for p in SKELETON], "flip_pairs": [list(p) for p in FLIP_PAIRS],
            "decoder": "dark", "sigma": 2.0, "flip_test": True}
    art = _export(settled_pose_model, info, root / "onnx-fp32")
    host = CocoKeypoints(paths["val_ann"], paths["val_images"], input_size=(128, 96))
    return {"root": root, "art": art, "images": paths["val_images"], "labels": paths["val_ann"], "host": host}


def test_pose_labels_are_read_and_cropped_as_the_host_does(pose):
    lab = L.load_labels(load_artifact(pose["art"]), pose["images"], pose["labels"])
    host = pose["host"]
    arrays = host.instance_arrays()
    assert lab.num_annotations == len(host) > 0 and lab.flip is True
    assert sum(lab.skipped.values()) == sum(host.dropped.values())
    assert [i["image_id"] for i in lab.instances] == arrays["image_id"].tolist()
    np.testing.assert_allclose([i["center"] for i in lab.instances], arrays["center"], atol=1e-4)
    np.testing.assert_allclose([i["scale"] for i in lab.instances], arrays["scale"], rtol=1e-6)
    # the numpy warp samples where cv2.warpAffine does (fixed point there: a grey level apart)
    for k, inst in enumerate(lab.instances):
        from hrnet_edge_runtime.decode.pose import get_affine_transform
        from hrnet_edge_runtime.inputs import read_image

        mat = get_affine_transform(inst["center"], inst["scale"], 0.0, (128, 96))
        ours = T.warp_affine(read_image(lab.paths[inst["image_id"]]), mat, (128, 96)).astype(int)
        theirs = host.crop(k)[0].astype(int)
        assert np.abs(ours - theirs).max() <= 2 and np.abs(ours - theirs).mean() < 0.05


def test_pose_metric_code_equals_the_hosts_on_the_same_keypoints(pose):
    from hrnet_edge.evaluation.pose import oks_ap, pck, to_coco_results

    lab = L.load_labels(load_artifact(pose["art"]), pose["images"], pose["labels"])
    host = pose["host"]
    arrays = host.instance_arrays()
    sizes = arrays["bbox"][:, 2:].max(axis=1)

    def host_metric(kps, scores):
        m = oks_ap(to_coco_results(kps, arrays["image_id"], scores), host.coco, image_ids=arrays["image_id"],
                   sigmas=host.sigmas)
        for a in (0.05, 0.1):
            m[f"PCK@{a}"] = pck(kps[..., :2], arrays["joints"], arrays["vis"], sizes, a)
        return m

    rng = np.random.default_rng(0)
    truth = np.concatenate([arrays["joints"], np.ones_like(arrays["joints"][..., :1])], axis=-1)
    perfect = lab.score(truth, np.ones(len(truth)))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["PCK@0.05"] == 1.0
    noisy = truth.copy()
    noisy[..., :2] += rng.normal(0, 3.0, noisy[..., :2].shape)
    scores = rng.uniform(0.3, 1.0, len(truth))
    cases = [(noisy, scores), lab.keypoints(_ort(pose["art"]))]
    for kps, sc in cases:
        ours, theirs = lab.score(kps, sc), host_metric(kps, sc)
        _same(ours, theirs, list(theirs))
    assert 0.0 < lab.score(noisy, scores)["AP"] < 1.0  # a non-trivial value was compared


def test_pose_end_to_end_matches_the_host_evaluation(pose):
    from hrnet_edge.evaluation.pose import evaluate_pose

    result = _cli(pose["art"], pose["images"], pose["labels"], pose["root"] / "pose.json")
    host = evaluate_pose(_ort(pose["art"]), pose["host"], batch_size=1, flip_test=True)
    assert result["metric_name"] == "AP" and set(result["metric"]) == set(host.metrics)
    assert abs(result["metric"]["AP"] - host.metrics["AP"]) <= POSE_AP_TOL
    assert result["metric"]["num_instances"] == host.metrics["num_instances"]
    assert result["evaluation"] == {**result["evaluation"], "images": 6, "annotations": len(pose["host"]),
                                    "format": "coco-keypoints", "flip_test": True}
    # the decoded keypoints themselves: the device's crops give the host's keypoints
    lab = L.load_labels(load_artifact(pose["art"]), pose["images"], pose["labels"])
    kps, _ = lab.keypoints(_ort(pose["art"]))
    dist = np.linalg.norm(kps[..., :2] - host.keypoints[..., :2], axis=-1)
    assert np.median(dist) < 0.25 and (dist < 1.0).mean() > 0.95, (np.median(dist), (dist < 1.0).mean())


def test_pose_labels_run_without_torch_or_the_project(pose, tmp_path):
    """The whole --labels path, COCOeval included, in a process where torch, hrnet_edge,
    converters and quantization cannot be imported."""
    out = tmp_path / "r.json"
    script = IMPORT_BLOCKER.format(blocked=("torch", "hrnet_edge", "converters", "quantization")) + textwrap.dedent(f"""
        from hrnet_edge_runtime.cli import main
        try:
            main({[str(pose["art"]), "--images", str(pose["images"]), "--labels", str(pose["labels"]), *RUN,
                   "--out", str(out)]!r})
        except SystemExit as exc:
            raise SystemExit(exc.code)
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["metric_name"] == "AP"


# --- det ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def det(tmp_path_factory):
    import torch

    from hrnet_edge import create_model
    from hrnet_edge.data.coco_instances import CocoInstances
    from hrnet_edge.data.synthetic_det import generate_synthetic_coco_instances
    from hrnet_edge.evaluation.detection import DecodeConfig

    root = tmp_path_factory.mktemp("labels_det")
    generate_synthetic_coco_instances(root / "data", num_train=0, num_val=6, image_size=(160, 192), seed=3)
    ann, images = root / "data" / "annotations" / "instances_val.json", root / "data" / "images" / "val"
    size = (128, 128)
    host = CocoInstances(ann, images, size)
    torch.manual_seed(0)
    model = create_model("hrnet_w8_det", input_size=size, num_outputs=host.num_classes, head_channels=32)
    model.train()
    with torch.no_grad():  # settle BatchNorm on the pictures
        model(torch.from_numpy(host.stack_images(list(range(len(host))))))
    model.eval()
    info = {"classes": list(host.class_names), "category_ids": [int(c) for c in host.category_ids],
            "score_threshold": 0.05, "nms_iou": 0.6, "decoder": DecodeConfig().describe(size, model.cfg.det_levels)}
    art = _export(model, info, root / "onnx-fp32", upsample_form="broadcast")
    return {"root": root, "art": art, "images": images, "labels": ann, "host": host, "size": size,
            "levels": model.cfg.det_levels}


def test_det_letterbox_and_labels_as_the_host(det):
    from hrnet_edge_runtime.inputs import pixels_to_input

    lab = L.load_labels(load_artifact(det["art"]), det["images"], det["labels"])
    host = det["host"]
    assert lab.image_ids == host.image_ids and lab.category_ids.tolist() == [int(c) for c in host.category_ids]
    assert lab.num_annotations == host.summary["annotations"] - host.summary["crowd"]
    for i, iid in enumerate(lab.image_ids):
        frame, scale = T.letterbox(L.read_raw_rgb(lab.paths[iid]), det["size"])
        assert scale == host.letterbox_info(i)["scale"]
        diff = np.abs(pixels_to_input(frame, lab.spec)[0] - host.stack_images([i])[0]) * 255
        assert diff.max() <= 1.01  # OpenCV's fixed-point weights: one grey level at most


def test_det_metric_code_equals_the_hosts_on_the_same_detections(det):
    from hrnet_edge.evaluation.detection import Detections, coco_results, evaluate_bbox

    lab = L.load_labels(load_artifact(det["art"]), det["images"], det["labels"])
    host = det["host"]

    def host_metric(dets):
        ds = [Detections(np.asarray(d["boxes"], np.float32), np.asarray(d["scores"], np.float32),
                         np.asarray(d["classes"], np.int64)) for d in dets]
        return evaluate_bbox(host.coco, coco_results(ds, host.image_ids, host.category_ids), image_ids=host.image_ids)

    def from_truth(noise, rng):
        out = []
        for i in range(len(host)):
            boxes, classes, crowd = host.instances(i)
            keep = crowd == 0
            b = boxes[keep] + rng.normal(0, noise, boxes[keep].shape) if noise else boxes[keep]
            out.append({"boxes": b, "scores": rng.uniform(0.2, 1.0, keep.sum()), "classes": classes[keep]})
        return out

    rng = np.random.default_rng(0)
    perfect = lab.score(from_truth(0.0, rng))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["no_results"] is False
    noisy = from_truth(4.0, rng)
    decoded = lab.detections(_ort(det["art"]))
    for dets in (noisy, decoded):
        ours, theirs = lab.score(dets), host_metric(dets)
        _same(ours, theirs, [k for k in theirs if k != "no_results"])
        assert ours["no_results"] == theirs["no_results"]
    assert 0.0 < lab.score(noisy)["AP"] < 1.0


def test_det_end_to_end_matches_the_host_evaluation(det):
    from hrnet_edge.evaluation.detection import coco_results, decode_batch, evaluate_bbox, to_original

    host = det["host"]
    result = _cli(det["art"], det["images"], det["labels"], det["root"] / "det.json")
    infer = _ort(det["art"])
    raw = np.concatenate([infer(host.stack_images([i])) for i in range(len(host))])
    dets = [to_original(d, host.letterbox_info(i)["scale"], host.letterbox_info(i)["orig_hw"])
            for i, d in enumerate(decode_batch(raw, det["size"], det["levels"]))]
    expected = evaluate_bbox(host.coco, coco_results(dets, host.image_ids, host.category_ids),
                             image_ids=host.image_ids)
    assert result["metric_name"] == "AP" and set(result["metric"]) == set(expected)
    assert abs(result["metric"]["AP"] - expected["AP"]) <= DET_AP_TOL
    assert result["evaluation"]["images"] == len(host)
    # the device's letterboxes give the host's raw outputs (pixels a grey level apart). The
    # untrained head scores hundreds of points at ~1.0, so which 100 boxes survive NMS is
    # float noise; on the same raw output the device decoder keeps the host's detections.
    from hrnet_edge.evaluation.detection import Detections, detection_agreement
    from hrnet_edge_runtime.inputs import pixels_to_input

    lab = L.load_labels(load_artifact(det["art"]), det["images"], det["labels"])
    for i, iid in enumerate(lab.image_ids):
        frame, scale = T.letterbox(L.read_raw_rgb(lab.paths[iid]), det["size"])
        ours = infer(pixels_to_input(frame, lab.spec))
        assert np.abs(ours - raw[i:i + 1]).max() <= 0.03 * np.ptp(raw[i]), i
        same = lab.decoder.decode(raw[i], {"scale": scale, "orig_hw": host.letterbox_info(i)["orig_hw"]})
        got = Detections(same["boxes"], same["scores"], same["classes"])
        assert min(detection_agreement(dets[i], got, 0.05, iou=0.99)) >= 0.98


# --- seg ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    import torch

    from hrnet_edge import create_model
    from hrnet_edge.data.segmentation import CITYSCAPES_CLASSES, LABEL_ID_TO_TRAIN_ID, load_cityscapes
    from hrnet_edge.data.synthetic_seg import generate_synthetic_cityscapes
    from PIL import Image

    root = tmp_path_factory.mktemp("labels_seg")
    generate_synthetic_cityscapes(root / "data", num_train=0, num_val=4, image_size=(96, 160), seed=5, workers=1)
    size = (64, 96)
    host = load_cityscapes(root / "data", "val", input_size=size)
    # the device layout: pictures in one folder, train-id masks named like them
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for img, mask in host.pairs:
        shutil.copy(img, images / img.name)
        Image.fromarray(LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(mask))]).save(masks / f"{img.stem}.png")
    torch.manual_seed(0)
    model = create_model("hrnet_w8_seg", input_size=size, num_outputs=len(CITYSCAPES_CLASSES))
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(host.stack_images(list(range(len(host))))))
    model.eval()
    info = {"classes": list(CITYSCAPES_CLASSES), "palette": [list(c) for c in host.palette], "ignore_index": 255,
            "flip_test": True}
    art = _export(model, info, root / "onnx-fp32")
    return {"root": root, "art": art, "images": images, "labels": masks, "host": host, "size": size}


def test_seg_metric_code_equals_the_hosts_and_labels_match(seg):
    from hrnet_edge.evaluation.segmentation import confusion_matrix, seg_metrics

    lab = L.load_labels(load_artifact(seg["art"]), seg["images"], seg["labels"])
    host = seg["host"]
    assert lab.flip is True and lab.ignore_index == 255 and lab.num_images == len(host)
    pairs = list(lab.predictions(_ort(seg["art"])))
    truth = host.stack_labels(list(range(len(host))))
    # the masks as the host reads them (LUT, resize); the nearest resize may differ at exact ties only
    agree = np.mean([(lb == t).mean() for (_, lb), t in zip(pairs, truth)])
    assert agree > 0.99, agree
    rng = np.random.default_rng(0)
    noisy = [(np.where(rng.random(t.shape) < 0.3, rng.integers(0, 19, t.shape), np.where(t == 255, 0, t)), t)
             for t in truth]
    k = len(host.class_names)
    for case in (pairs, noisy, [(t.clip(0, 18), t) for t in truth]):
        conf = sum(confusion_matrix(p, t, k, 255) for p, t in case)
        theirs = seg_metrics(conf, host.class_names)
        ours = lab.score(case)
        for key in ("mIoU", "pixel_acc", "mean_acc", "num_pixels", "absent_classes", "per_class_IoU"):
            assert ours[key] == theirs[key], key
        assert ours["num_images"] == len(host)
    assert lab.score([(t.clip(0, 18), t) for t in truth])["mIoU"] == 1.0
    assert 0.0 < lab.score(noisy)["mIoU"] < 1.0


def test_seg_end_to_end_matches_the_host_evaluation(seg):
    from hrnet_edge.evaluation.segmentation import evaluate_segmentation

    result = _cli(seg["art"], seg["images"], seg["labels"], seg["root"] / "seg.json")
    host = evaluate_segmentation(_ort(seg["art"]), seg["host"], batch_size=1, flip_test=True, fixed_batch=1)
    assert result["metric_name"] == "mIoU"
    assert set(result["metric"]) == set(host.metrics)
    assert abs(result["metric"]["mIoU"] - host.metrics["mIoU"]) <= SEG_MIOU_TOL
    assert result["metric"]["num_pixels"] == host.metrics["num_pixels"]
    lab = L.load_labels(load_artifact(seg["art"]), seg["images"], seg["labels"])
    preds = np.stack([p for p, _ in lab.predictions(_ort(seg["art"]))])
    # an untrained head's logits are close between classes: a pixel a grey level apart can
    # flip its argmax, so a few of them differ (98.8 % agree here)
    assert (preds == host.labels_pred).mean() > 0.97


# --- cls ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    import torch

    from hrnet_edge import create_model
    from hrnet_edge.data.classification import ImageFolderDataset
    from hrnet_edge.data.synthetic_cls import generate_synthetic_imagefolder

    root = tmp_path_factory.mktemp("labels_cls")
    generate_synthetic_imagefolder(root / "data", num_train_per_class=1, num_val_per_class=3, image_size=(96, 96),
                                   num_classes=4, seed=2, workers=1)
    size = (64, 64)
    host = ImageFolderDataset(root / "data", "val", input_size=size, train=False)
    images = root / "images"
    images.mkdir()
    rows = []
    for k, (path, label) in enumerate(zip(host.paths, host.labels)):
        name = f"{k:03d}{Path(path).suffix}"
        shutil.copy(path, images / name)
        rows.append((name, host.class_names[label]))
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as fh:
        csv.writer(fh).writerows([("file", "label"), *rows])
    torch.manual_seed(0)
    model = create_model("hrnet_w8_cls", input_size=size, num_outputs=len(host.class_names))
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(host.stack_images(list(range(len(host))))))
    model.eval()
    art = _export(model, {"classes": list(host.class_names), "resize_ratio": 0.875}, root / "onnx-fp32")
    return {"root": root, "art": art, "images": images, "labels": labels, "host": host, "rows": rows}


def test_cls_views_labels_and_metric_code_as_the_host(cls):
    from hrnet_edge.data.classification import eval_transform
    from hrnet_edge.evaluation.classification import topk_accuracy

    lab = L.load_labels(load_artifact(cls["art"]), cls["images"], cls["labels"])
    host = cls["host"]
    assert lab.format == "csv" and lab.targets.tolist() == list(host.labels)
    for path, original in zip(lab.files, host.paths):
        ours = T.center_crop_view(L.read_raw_rgb(path), (64, 64)).astype(int)
        theirs = eval_transform(cv2.cvtColor(cv2.imread(str(original)), cv2.COLOR_BGR2RGB), (64, 64)).astype(int)
        assert np.abs(ours - theirs).max() <= 1
    rng = np.random.default_rng(0)
    for logits in (lab.logits(_ort(cls["art"])), rng.normal(size=(len(lab.targets), 4)),
                   np.zeros((len(lab.targets), 4))):  # ties: the lower index first, on both sides
        ours, theirs = lab.score(logits), topk_accuracy(logits, lab.targets, ks=(1, 5))
        assert ours["top1"] == theirs["top1"] and ours["top5"] == theirs["top5"] == 1.0
    one_hot = np.eye(4)[lab.targets]
    assert lab.score(one_hot)["top1"] == 1.0 and lab.score(np.roll(one_hot, 1, axis=1))["top1"] == 0.0


def test_cls_end_to_end_matches_the_host_evaluation_json_labels_too(cls, tmp_path):
    from hrnet_edge.evaluation.classification import evaluate_classification

    result = _cli(cls["art"], cls["images"], cls["labels"], cls["root"] / "cls.json")
    host = evaluate_classification(_ort(cls["art"]), cls["host"], fixed_batch=1, keep_logits=True)
    assert result["metric_name"] == "top1" and set(result["metric"]) == set(host.metrics)
    assert result["metric"]["top1"] == host.metrics["top1"]
    assert result["metric"]["num_images"] == host.metrics["num_images"] == 12
    lab = L.load_labels(load_artifact(cls["art"]), cls["images"], cls["labels"])
    np.testing.assert_array_equal(lab.logits(_ort(cls["art"])).argmax(1), host.pred)
    # the same labels as JSON, with class indices
    classes = list(cls["host"].class_names)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({name: classes.index(label) for name, label in cls["rows"]}))
    again = _cli(cls["art"], cls["images"], labels, tmp_path / "r.json")
    assert again["metric"] == result["metric"] and again["evaluation"]["format"] == "json"


# --- bad input ----------------------------------------------------------------------------

def test_bad_labels_are_one_line_and_exit_2(cls, pose, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    art, images = str(cls["art"]), cls["images"]

    def fails(labels, *extra, art=art, images=images) -> str:
        argv = [art, *(["--images", str(images)] if images else []), "--labels", str(labels), *RUN, *extra,
                "--out", str(out)]
        err = runner_exit2(capsys, argv)
        assert not out.exists()
        return err

    assert "--labels needs --images" in fails(cls["labels"], images=None)
    assert "no such file" in fails(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\n000.png\n")
    assert "not 'file,label'" in fails(bad)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("".join(f"{n},{'zebra' if i == 0 else lbl}\n" for i, (n, lbl) in enumerate(cls["rows"])))
    assert "'zebra'" in fails(unknown)
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(f"{n},{lbl}\n" for n, lbl in cls["rows"][1:]))
    assert "no label for 1 picture" in fails(partial) and cls["rows"][0][0] in fails(partial)
    # a pose artifact given something that is not a COCO keypoints file
    assert "COCO person_keypoints" in fails(cls["labels"], art=str(pose["art"]), images=pose["images"])
    # pose and det need pycocotools: the message names the extra
    monkeypatch.setitem(sys.modules, "pycocotools.cocoeval", None)
    err = fails(pose["labels"], art=str(pose["art"]), images=pose["images"])
    assert 'hrnet-edge-runtime[metrics]' in err and "pycocotools" in err
    monkeypatch.undo()
    # a task without a metric here
    other = tmp_path / "other"
    shutil.copytree(cls["art"], other)
    meta = json.loads((other / "metadata.json").read_text())
    meta["task"] = "depth"
    (other / "metadata.json").write_text(json.dumps(meta))
    assert "task 'depth' has no metric" in fails(cls["labels"], art=str(other))


def test_bad_masks_fail_mid_run_with_one_line_and_no_file(seg, tmp_path, capsys):
    from PIL import Image

    masks = tmp_path / "masks"
    shutil.copytree(seg["labels"], masks)
    first = sorted(masks.iterdir())[0]
    arr = np.asarray(Image.open(first)).copy()
    arr[0, 0] = 77  # neither a class id (0..18) nor the ignore value
    Image.fromarray(arr).save(first)
    out = tmp_path / "r.json"
    err = runner_exit2(capsys, [str(seg["art"]), "--images", str(seg["images"]), "--labels", str(masks), *RUN,
                                   "--out", str(out)])
    assert "77" in err and first.name in err and not out.exists()
    first.unlink()
    err = runner_exit2(capsys, [str(seg["art"]), "--images", str(seg["images"]), "--labels", str(masks), *RUN,
                                   "--out", str(out)])
    assert "have no mask" in err and first.name in err


def test_result_schema_checks_the_metric_fields(cls, tmp_path):
    from hrnet_edge_runtime.errors import ArtifactError

    good = _cli(cls["art"], cls["images"], cls["labels"], tmp_path / "r.json")
    for change in ({"metric_name": "AP"}, {"metric": {"top1": "high"}}, {"evaluation": {"images": 0}}):
        with pytest.raises(ArtifactError):
            validate_result({**good, **change})
    partial = {k: v for k, v in good.items() if k != "evaluation"}
    with pytest.raises(ArtifactError, match="come together"):
        validate_result(partial)
