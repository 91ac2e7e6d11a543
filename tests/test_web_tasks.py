"""The sample web app's seg, det and cls code (apps/web/src/seg.js, det.js, cls.js, resize.js)
against the Python device runtime, without a browser (Node runs apps/web/test/decode.mjs).

For each task a small untrained model (``hrnet_w8_seg`` 64x128, ``hrnet_w8_det`` 96x128,
``hrnet_w8_cls`` 64x64; seeded) is exported to ONNX fp32 with the project's converter and
the metadata its pipeline writes (``base_metadata`` with the task_info each task's
``app_info`` gives: classes and palette, classes, category ids and the decoder
description, classes and resize ratio). Pictures come from the project's synthetic
generators, some cut to other sizes so the letterbox pads and the views grow or shrink.

Checked, on identical inputs:
* preprocessing: the page's model-input bytes (seg: resize to the input; det: letterbox;
  cls: short side to input / resize_ratio, centre crop) equal the runtime's
  (``hrnet_edge_runtime.transforms``) and the host data loaders' (OpenCV) within one grey level;
* decoding, on the same raw ONNX Runtime outputs: seg label maps at the picture's size
  (with and without the flip test) equal ``SegDecoder``'s on >= 99.9 % of pixels (ties
  of the top two logits aside); det boxes (within 1e-3 px), scores, classes and their
  count after NMS equal ``DetDecoder``'s, boxes mapped back through the letterbox, with
  the pipeline's settings (score threshold 0.05: not lowered, the untrained head
  already gives 90-100 boxes per picture) and two copies of the metadata (per-level
  top-k 20; class-agnostic NMS at IoU 0.3 capped at 7); cls top-5 indices equal ``ClsDecoder``'s and probabilities
  within 1e-6, also on hand-made logits with ties and NaN;
* a metadata.json the page cannot use is named (key and valid values), not guessed around.

Like tests/test_web_app.py: without node the tests skip, or fail under
``HRNET_EDGE_REQUIRE_BROWSER=1``.
"""
from __future__ import annotations

import base64
import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
cv2 = pytest.importorskip("cv2", reason="opencv is not installed")

from hrnet_edge_runtime import transforms as rt  # noqa: E402
from hrnet_edge_runtime.adapters import open_adapter  # noqa: E402
from hrnet_edge_runtime.decode.cls import ClsDecoder  # noqa: E402
from hrnet_edge_runtime.decode.det import DetDecoder, letterbox_context  # noqa: E402
from hrnet_edge_runtime.decode.seg import SegDecoder, upsample_logits  # noqa: E402
from hrnet_edge_runtime.inputs import pixels_to_input, read_image  # noqa: E402
from conftest import run_page_code  # noqa: E402
from hrnet_edge_runtime.metadata import load_artifact  # noqa: E402

pytestmark = pytest.mark.export

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "apps" / "web"
SEG_IN, DET_IN, CLS_IN = (64, 128), (96, 128), (64, 64)


@pytest.fixture(scope="module")
def node(node_exe) -> str:
    return node_exe


def _node_ok(node: str, job: dict) -> dict:
    done = run_page_code(node, job)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _b64(rgb: np.ndarray) -> dict:
    return {"rgb_b64": base64.b64encode(np.ascontiguousarray(rgb).tobytes()).decode(),
            "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}


def _page_rgb(item: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(item["rgb_b64"]), np.uint8).reshape(item["height"], item["width"], 3)


def _grey_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def _export(model, task_info: dict, out: Path) -> Path:
    from converters.base import ExportJob
    from converters.metadata import base_metadata
    from converters.registry import get_target

    job = ExportJob(model=model.eval(), precision="fp32", out_dir=out,
                    metadata=base_metadata(model, task_info, "ab" * 32))
    return get_target("onnx").export(job).path.parent


def _run(art_dir: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    art = load_artifact(art_dir)
    with open_adapter(art) as adapter:
        return [np.asarray(adapter.run(pixels_to_input(x, art)), np.float32) for x in inputs]


def _meta(art_dir: Path) -> dict:
    return json.loads((art_dir / "metadata.json").read_text())


# ----------------------------------------------------------------------------- artifacts
@pytest.fixture(scope="module")
def seg_case(tmp_path_factory):
    """(artifact folder, pictures): hrnet_w8_seg 64x128 with Cityscapes classes and palette,
    two synthetic street pictures (96x192) and one cut to 70x150."""
    import torch

    from hrnet_edge import create_model
    from hrnet_edge.data.segmentation import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from hrnet_edge.data.synthetic_seg import generate_synthetic_cityscapes

    root = tmp_path_factory.mktemp("web_seg")
    paths = generate_synthetic_cityscapes(root / "data", num_train=0, num_val=2, image_size=(96, 192), seed=5,
                                          workers=1)
    pics = [read_image(p) for p in sorted(Path(paths["val_images"]).rglob("*.png"))]
    pics.append(np.ascontiguousarray(pics[0][13:83, 20:170]))
    torch.manual_seed(0)
    model = create_model("hrnet_w8_seg", input_size=SEG_IN)
    info = {"classes": list(CITYSCAPES_CLASSES), "palette": [list(c) for c in CITYSCAPES_PALETTE],
            "ignore_index": 255, "flip_test": True}  # SegTask.app_info
    return _export(model, info, root / "onnx-fp32"), pics


@pytest.fixture(scope="module")
def det_case(tmp_path_factory):
    """(artifact folder, pictures, dataset): hrnet_w8_det 96x128 on the synthetic instances'
    six categories, three 120x160 pictures and cuts of 120x150, 100x160 and 50x60."""
    import torch

    from hrnet_edge import create_model
    from hrnet_edge.data.coco_instances import CocoInstances
    from hrnet_edge.data.synthetic_det import generate_synthetic_coco_instances
    from hrnet_edge.evaluation.detection import DecodeConfig

    root = tmp_path_factory.mktemp("web_det")
    generate_synthetic_coco_instances(root / "data", num_train=0, num_val=3, image_size=(120, 160), seed=5)
    ds = CocoInstances(root / "data/annotations/instances_val.json", root / "data/images/val",
                              input_size=DET_IN)
    pics = [ds.read_image(i) for i in range(len(ds))]
    pics += [np.ascontiguousarray(pics[0][:, :150]), np.ascontiguousarray(pics[1][:100]),
             np.ascontiguousarray(pics[2][30:80, 40:100])]
    torch.manual_seed(0)
    model = create_model("hrnet_w8_det", input_size=DET_IN, num_outputs=ds.num_classes)
    dcfg = DecodeConfig()  # the pipeline's defaults
    info = {"classes": list(ds.class_names), "category_ids": [int(c) for c in ds.category_ids],
            "score_threshold": dcfg.score_threshold, "nms_iou": dcfg.iou_threshold,
            "decoder": dcfg.describe(DET_IN, model.cfg.det_levels)}  # DetTask.app_info
    return _export(model, info, root / "onnx-fp32"), pics, ds


@pytest.fixture(scope="module")
def cls_case(tmp_path_factory):
    """(artifact folder, pictures): hrnet_w8_cls 64x64 on four synthetic classes, four 90x120
    pictures (views shrink by area averaging) and a 40x50 cut (the view grows, bilinear)."""
    import torch

    from hrnet_edge import create_model
    from hrnet_edge.data.synthetic_cls import generate_synthetic_imagefolder

    root = tmp_path_factory.mktemp("web_cls")
    paths = generate_synthetic_imagefolder(root / "data", num_train_per_class=1, num_val_per_class=1,
                                           image_size=(90, 120), num_classes=4, seed=5, workers=1)
    classes = sorted(p.name for p in Path(paths["val"]).iterdir() if p.is_dir())  # ImageFolder order
    pics = [read_image(p) for p in sorted(Path(paths["val"]).rglob("*.jpg"))]
    pics.append(np.ascontiguousarray(pics[0][20:60, 30:80]))
    torch.manual_seed(0)
    model = create_model("hrnet_w8_cls", input_size=CLS_IN, num_outputs=len(classes))
    info = {"classes": classes, "resize_ratio": 0.875}  # ClsTask.app_info
    return _export(model, info, root / "onnx-fp32"), pics


# ----------------------------------------------------------------------------- seg
def test_seg_page_input_and_label_maps_equal_the_python_runtime(node, seg_case):
    from hrnet_edge.data.seg_io import resize_image

    art, pics = seg_case
    meta = _meta(art)
    assert meta["task"] == "seg" and meta["output"]["decoding"]["flip_test_in_checks"] is True
    got = _node_ok(node, {"task": "seg", "meta": meta, "inputs": [_b64(p) for p in pics]})
    inputs, grey = [], []
    for item, pic in zip(got["inputs"], pics):
        page = _page_rgb(item)
        assert page.shape == (*SEG_IN, 3)
        grey.append((_grey_diff(page, rt.resize_bilinear(pic, SEG_IN)), _grey_diff(page, resize_image(pic, SEG_IN))))
        assert grey[-1][0] <= 1 and grey[-1][1] <= 1  # the runtime's, the host loader's (cv2)
        inputs.append(page)
    mirrored = [np.ascontiguousarray(x[:, ::-1]) for x in inputs]
    raws = _run(art, inputs + mirrored)
    raw, flipped = raws[:len(inputs)], raws[len(inputs):]
    decodes, expected = [], []
    dec = SegDecoder(meta)
    for pic, r, f in zip(pics, raw, flipped):
        for fl in (f, None):
            decodes.append({"raw": r.ravel().tolist(), "dims": list(r.shape), "image_size": list(pic.shape[:2]),
                            "flipped": None if fl is None else fl.ravel().tolist()})
            want = dec.decode(r, {"size": pic.shape[:2], "flipped": fl})["labels"][0]
            logits = 0.5 * (r + fl[..., ::-1]) if fl is not None else r
            expected.append((want, upsample_logits(logits[0], pic.shape[:2])))
    # and at the input's size (no image_size): the map the model's grid upsamples to
    decodes.append({"raw": raw[0].ravel().tolist(), "dims": list(raw[0].shape), "image_size": None, "flipped": None})
    expected.append((dec.decode(raw[0])["labels"][0], upsample_logits(raw[0][0], SEG_IN)))
    out = _node_ok(node, {"task": "seg", "meta": meta, "decodes": decodes})["decodes"]
    fractions = []
    for d, (want, up) in zip(out, expected):
        assert d["labels_dtype"] == "uint8" and (d["height"], d["width"]) == want.shape
        labels = np.frombuffer(base64.b64decode(d["labels_b64"]), np.uint8).reshape(want.shape)
        top2 = np.sort(up, axis=0)[-2:]
        tie = (top2[1] - top2[0]) <= 1e-6 * np.maximum(1.0, np.abs(top2[1]))
        same = labels == want
        fractions.append(same[~tie].mean())
        assert same[~tie].mean() >= 0.999, (same.mean(), tie.mean())
        ids, counts = np.unique(labels, return_counts=True)
        assert {c["index"]: c["pixels"] for c in d["present"]} == dict(zip(ids.tolist(), counts.tolist()))
        assert all(c["name"] == meta["output"]["classes"][c["index"]] for c in d["present"])
        assert all(c["color"] == meta["output"]["palette"][c["index"]] for c in d["present"])
    assert len(np.unique(expected[0][0])) > 1  # the untrained net does not paint one class everywhere
    print(f"seg: input bytes vs runtime / cv2 differ by at most {max(g[0] for g in grey)} / "
          f"{max(g[1] for g in grey)} grey levels; label maps equal on {min(fractions):.6f} of non-tied pixels at worst")


# ----------------------------------------------------------------------------- det
def _det_job_and_expected(meta, raws, pics):
    dec = DetDecoder(meta)
    decodes, expected = [], []
    for r, pic in zip(raws, pics):
        decodes.append({"raw": r.ravel().tolist(), "dims": list(r.shape), "image_size": list(pic.shape[:2])})
        expected.append(dec.decode(r, letterbox_context(pic.shape[:2], dec.input_size)))
    decodes.append({"raw": raws[0].ravel().tolist(), "dims": list(raws[0].shape), "image_size": None})
    expected.append(dec.decode(raws[0]))
    return {"task": "det", "meta": meta, "decodes": decodes}, expected


def test_det_page_letterbox_and_detections_equal_the_python_runtime(node, det_case):
    art, pics, ds = det_case
    meta = _meta(art)
    assert meta["output"]["decoding"]["config"]["score_threshold"] == 0.05
    got = _node_ok(node, {"task": "det", "meta": meta, "inputs": [_b64(p) for p in pics]})
    host = np.rint(ds.stack_images() * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # what evaluation feeds
    inputs, grey, grey_host, box_diff = [], [], [], [0.0]
    for i, (item, pic) in enumerate(zip(got["inputs"], pics)):
        page = _page_rgb(item)
        frame, scale = rt.letterbox(pic, DET_IN)
        grey.append(_grey_diff(page, frame))
        assert item["scale"] == scale and grey[-1] <= 1
        if i < len(host):
            grey_host.append(_grey_diff(page, host[i]))
            assert grey_host[-1] <= 1
        inputs.append(page)
    assert got["inputs"][3]["resized"] == [96, 120] and got["inputs"][5]["resized"] == [96, 115]  # padded, grown
    raws = [r[0] for r in _run(art, inputs)]
    counts = []
    # The untrained head already scores hundreds of (point, class) pairs above the
    # pipeline's 0.05, many saturated at exactly 1.0 (ties broken by index), so the
    # threshold is kept. Copies of the metadata exercise the other settings: a small
    # per-level top-k without the cap of 100, and class-agnostic NMS capped at 7.
    topk = copy.deepcopy(meta)
    topk["output"]["decoding"]["config"].update(pre_nms_topk=20, max_detections=300)
    flat = copy.deepcopy(meta)
    flat["output"]["decoding"]["config"].update(class_aware=False, max_detections=7, iou_threshold=0.3)
    for m in (meta, topk, flat):
        job, expected = _det_job_and_expected(m, raws, pics)
        out = _node_ok(node, job)["decodes"]
        for d, want in zip(out, expected):
            assert len(d["scores"]) == len(want["scores"])
            counts.append(len(want["scores"]))
            if not len(want["scores"]):
                continue
            np.testing.assert_allclose(np.array(d["boxes"]), want["boxes"], atol=1e-3, rtol=0)
            np.testing.assert_allclose(d["scores"], want["scores"], atol=1e-6, rtol=0)
            box_diff.append(float(np.abs(np.array(d["boxes"]) - want["boxes"]).max()))
            assert d["classes"] == want["classes"].tolist() and d["labels"] == want["labels"]
            assert d["category_ids"] == want["category_ids"].tolist() and d["coordinates"] == want["coordinates"]
    # A hand-made output for picture 3 (resized to 96 x 120, padded to 128 wide): two
    # confident points of the stride-4 level in row 10, both with 4 px boxes. Column 5
    # lies in the picture; column 31 (cx = 126) in the padding, so its box clips to zero
    # width in the picture, and both decoders drop it.
    r = np.full_like(raws[3], -20.0)
    r[:, :4] = np.log(0.5)
    for col in (5, 31):
        r[10 * DET_IN[1] // 4 + col, [4, 5]] = 10.0
    want = DetDecoder(meta).decode(r, letterbox_context(pics[3].shape[:2], DET_IN))
    s = 96 / pics[3].shape[0]
    np.testing.assert_allclose(want["boxes"], [[20 / s, 40 / s, 24 / s, 44 / s]], rtol=1e-6)
    out = _node_ok(node, {"task": "det", "meta": meta, "decodes": [
        {"raw": r.ravel().tolist(), "dims": list(r.shape), "image_size": list(pics[3].shape[:2])}]})["decodes"][0]
    np.testing.assert_allclose(np.array(out["boxes"]), want["boxes"], atol=1e-3, rtol=0)
    n = len(pics) + 1
    assert min(counts) > 0 and max(counts[n:2 * n]) < 80 and max(counts[2 * n:]) == 7, counts
    print(f"det: letterbox bytes vs runtime / host loader differ by at most {max(grey)} / {max(grey_host)} grey "
          f"levels; boxes by at most {max(box_diff):.2e} px; detections per decode (pipeline / top-k 20 / "
          f"class-agnostic, max 7): {counts}")


# ----------------------------------------------------------------------------- cls
def test_cls_page_view_and_top5_equal_the_python_runtime(node, cls_case):
    from hrnet_edge.data.classification import eval_transform

    art, pics = cls_case
    meta = _meta(art)
    assert "input / 0.875" in meta["output"]["preprocess"]
    got = _node_ok(node, {"task": "cls", "meta": meta, "inputs": [_b64(p) for p in pics]})
    inputs, grey = [], []
    for item, pic in zip(got["inputs"], pics):
        page = _page_rgb(item)
        grey.append((_grey_diff(page, rt.center_crop_view(pic, CLS_IN, 0.875)),
                     _grey_diff(page, eval_transform(pic, CLS_IN, 0.875))))
        assert grey[-1][0] <= 1 and grey[-1][1] <= 1  # the runtime's, the host loader's (cv2)
        inputs.append(page)
    assert got["inputs"][0]["resized"] == [73, 97] and got["inputs"][-1]["resized"] == [73, 91]
    # The ratio from the preprocess text alone gives the same view.
    no_info = copy.deepcopy(meta)
    del no_info["task_info"]["resize_ratio"]
    again = _node_ok(node, {"task": "cls", "meta": no_info, "inputs": [_b64(pics[0])]})["inputs"][0]
    assert again["rgb_b64"] == got["inputs"][0]["rgb_b64"]
    raws = [r for r in _run(art, inputs)]
    hand = [np.array([[0.5, 2.0, 2.0, np.nan, -1.0, 2.0, 0.5, -30.0]], np.float32),
            np.array([[3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]], np.float32)]
    hand_meta = copy.deepcopy(meta)
    hand_meta["output"].update(num_classes=8, classes=[f"c{i}" for i in range(8)])
    shown = []
    for m, logits in ((meta, raws), (hand_meta, hand)):
        dec = ClsDecoder(m)
        decodes = [{"raw": r.ravel().tolist(), "dims": list(r.shape)} for r in logits]
        # JSON has no NaN: it travels as the string "NaN", which the Float32Array reads back as NaN.
        job = json.dumps({"task": "cls", "meta": m, "decodes": decodes}).replace("NaN", '"NaN"')
        done = subprocess.run([node, str(WEB / "test" / "decode.mjs")], input=job, text=True, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        for d, r in zip(json.loads(done.stdout)["decodes"], logits):
            want = dec.decode(r)
            assert d["indices"] == want["indices"][0].tolist() and d["labels"] == want["labels"][0]
            np.testing.assert_allclose(d["probabilities"], want["probabilities"][0], atol=1e-6, rtol=0)
            shown.append(float(np.abs(np.array(d["probabilities"]) - want["probabilities"][0]).max()))
    print(f"cls: view bytes vs runtime / cv2 differ by at most {max(g[0] for g in grey)} / "
          f"{max(g[1] for g in grey)} grey levels; largest probability difference {max(shown):.2e}")


# ----------------------------------------------------------------------------- metadata errors
def test_page_names_the_metadata_it_cannot_use(node, seg_case, det_case, cls_case):
    seg, det, cls = _meta(seg_case[0]), _meta(det_case[0]), _meta(cls_case[0])
    cases = []
    m = copy.deepcopy(seg)
    m["output"]["layout"] = "NCWH"
    cases.append(("seg", m, "output.layout", "valid: NCHW, NHWC"))
    m = copy.deepcopy(seg)
    m["output"]["palette"] = m["output"]["palette"][:-1]
    cases.append(("seg", m, "output.palette", "19 [r, g, b] colours"))
    m = copy.deepcopy(det)
    m["output"]["decoding"]["config"]["nms_threshold"] = 0.5
    cases.append(("det", m, "output.decoding.config", "valid: score_threshold, pre_nms_topk, iou_threshold"))
    m = copy.deepcopy(det)
    m["output"]["strides"] = [8, 16, 32, 64]
    cases.append(("det", m, "output.strides", "[4,8,16,32]"))
    m = copy.deepcopy(cls)
    del m["task_info"]["resize_ratio"]
    m["output"]["preprocess"] = "resize to the input size"
    cases.append(("cls", m, "output.preprocess", "resize the short side to input / R"))
    cases.append(("det", seg, "task", "this is the detection decoder"))
    for task, meta, key, valid in cases:
        done = run_page_code(node, {"task": task, "meta": meta, "decodes": []})
        assert done.returncode != 0 and f"metadata.json {key} " in done.stderr and valid in done.stderr, done.stderr
    done = run_page_code(node, {"task": "depth", "meta": seg})
    assert done.returncode == 2 and "valid: pose, seg, det, cls" in done.stderr
