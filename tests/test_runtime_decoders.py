"""The torch-free decoders of hrnet_edge_runtime.decode: equal to the project's previous
results (the OpenCV-based DARK computation, torch's bilinear upsampling, the evaluation's
ranking and saved checks of finished runs), configured from real metadata, typed errors,
and importable with torch, cv2 and the project's packages blocked."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hrnet_edge_runtime.decode import (DecodeConfigError, DecodeInputError, MetadataError,
                                       decoder_for)
from hrnet_edge_runtime.decode import pose as rt_pose
from hrnet_edge_runtime.decode.cls import topk
from hrnet_edge_runtime.decode.det import letterbox_context
from hrnet_edge_runtime.decode.seg import label_map
from hrnet_edge_runtime.errors import RuntimeErrorBase

from hrnet_edge.data import FLIP_PAIRS, KEYPOINT_NAMES, SKELETON, flip_permutation, gaussian_targets
from hrnet_edge.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
POSE_RUN, SEG_RUN, CLS_RUN = ROOT / "runs/default", ROOT / "runs/hrnet_w8_seg", ROOT / "runs/hrnet_w8_cls"
DET_RUN = Path("/tmp/runs/det10")
POSE_IN, DET_IN, SEG_IN = (128, 96), (64, 64), (32, 64)
PX = 1e-4  # the bound on decoded positions, in pixels


# ----------------------------------------------------------------------------- references
def _cv2_dark(hm: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The DARK decoding as an OpenCV loop: one map at a time, cv2.GaussianBlur with
    replicated borders, the Taylor step written out with scalars."""
    n, k, h, w = hm.shape
    r = max(1, int(round(3 * sigma)))
    out, peaks = np.zeros((n, k, 2)), np.zeros((n, k, 1))
    for i in range(n):
        for j in range(k):
            m = np.ascontiguousarray(hm[i, j], np.float32)
            py, px = divmod(int(m.argmax()), w)
            peak = float(m[py, px])
            out[i, j], peaks[i, j, 0] = (px, py), peak
            if h < 3 or w < 3 or not (1 <= px <= w - 2 and 1 <= py <= h - 2) or peak <= 0:
                continue
            sm = cv2.GaussianBlur(m, (2 * r + 1, 2 * r + 1), sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REPLICATE)
            top = float(sm.max())
            lg = np.log(np.maximum(sm * np.float32(peak / top if top > 0 else 0.0), 1e-10)).astype(np.float64)
            c = lg[py, px]
            gx, gy = 0.5 * (lg[py, px + 1] - lg[py, px - 1]), 0.5 * (lg[py + 1, px] - lg[py - 1, px])
            hxx, hyy = lg[py, px + 1] - 2 * c + lg[py, px - 1], lg[py + 1, px] - 2 * c + lg[py - 1, px]
            hxy = 0.25 * (lg[py + 1, px + 1] - lg[py + 1, px - 1] - lg[py - 1, px + 1] + lg[py - 1, px - 1])
            det = hxx * hyy - hxy * hxy
            if det <= 1e-12 or hxx >= 0:
                continue
            ox, oy = -(hyy * gx - hxy * gy) / det, -(hxx * gy - hxy * gx) / det
            if abs(ox) <= 1 and abs(oy) <= 1:
                out[i, j] += (ox, oy)
    return out.astype(np.float32), peaks.astype(np.float32)


def _loop_quarter(hm: np.ndarray) -> np.ndarray:
    n, k, h, w = hm.shape
    out = np.zeros((n, k, 2), np.float32)
    for i in range(n):
        for j in range(k):
            m = hm[i, j]
            py, px = divmod(int(m.argmax()), w)
            x, y = float(px), float(py)
            if 0 < px < w - 1:
                x += 0.25 * np.sign(m[py, px + 1] - m[py, px - 1])
            if 0 < py < h - 1:
                y += 0.25 * np.sign(m[py + 1, px] - m[py - 1, px])
            out[i, j] = x, y
    return out


def _cv2_crop(center, scale, rot: float, size) -> np.ndarray:
    """The crop affine as the metadata describes it, solved by cv2.getAffineTransform
    from three image points."""
    (h, w), th = size, np.deg2rad(rot)
    k = w / scale[0]
    rmat = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
    src = np.array([center, [center[0] + 10, center[1]], [center[0], center[1] + 7]], np.float64)
    dst = (k * (src - center) @ rmat.T) + [(w - 1) / 2, (h - 1) / 2]
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))


def _cv2_to_image(coords, centers, scales, rots, size, hm_size) -> np.ndarray:
    sx, sy = size[1] / hm_size[1], size[0] / hm_size[0]
    out = []
    for c, ce, sc, r in zip(coords, centers, scales, rots):
        inp = (c.astype(np.float64) + 0.5) * [sx, sy] - 0.5
        inv = cv2.invertAffineTransform(_cv2_crop(ce, sc, r, size).astype(np.float64))
        out.append(cv2.transform(inp[:, None, :], inv)[:, 0])
    return np.stack(out)


def _targets(rng, n: int, size=POSE_IN, noise: float = 0.0) -> np.ndarray:
    """Heatmaps from the project's Gaussian target code: sub-pixel joints (some by the
    border, some outside the crop: all-zero maps), optionally scaled and noisy."""
    hm_size = (size[0] // 4, size[1] // 4)
    maps = []
    for _ in range(n):
        joints = np.stack([rng.uniform(-4, size[1] + 2, 17), rng.uniform(-4, size[0] + 2, 17)], 1)
        t, _ = gaussian_targets(joints, np.full(17, 2), size, hm_size, sigma=2.0)
        maps.append(t * rng.uniform(0.3, 1.0) + noise * rng.normal(size=t.shape).astype(np.float32))
    return np.stack(maps).astype(np.float32)


# ----------------------------------------------------------------------------- metadata
@pytest.fixture(scope="module")
def metas() -> dict:
    """metadata.json as the exporters write it (base_metadata + each task's app_info)."""
    from converters.metadata import base_metadata
    from hrnet_edge import create_model
    from hrnet_edge.evaluation.detection import DecodeConfig

    dcfg = DecodeConfig(score_threshold=0.1, iou_threshold=0.5, max_detections=7, pre_nms_topk=50)
    models = {
        "pose": (create_model("hrnet_w8_pose", input_size=POSE_IN), {
            "keypoint_names": list(KEYPOINT_NAMES), "skeleton": [list(p) for p in SKELETON],
            "flip_pairs": [list(p) for p in FLIP_PAIRS], "decoder": "dark", "sigma": 2.0, "flip_test": True}),
        "det": (create_model("hrnet_w8_det", input_size=DET_IN, num_outputs=3, head_channels=8), {
            "classes": ["a", "b", "c"], "category_ids": [2, 4, 9], "score_threshold": 0.1,
            "nms_iou": 0.5, "decoder": dcfg.describe(DET_IN, 4)}),
        "seg": (create_model("hrnet_w8_seg", input_size=SEG_IN, num_outputs=5), {
            "classes": list("vwxyz"), "palette": [[i * 40, 0, 255 - i * 40] for i in range(5)],
            "ignore_index": 255, "flip_test": False}),
        "cls": (create_model("hrnet_w8_cls", input_size=(64, 64), num_outputs=6),
                {"classes": list("abcdef"), "resize_ratio": 0.875}),
    }
    out = {t: base_metadata(m, info) for t, (m, info) in models.items()}
    out["det_cfg"] = dcfg
    return out


def _real(run: Path, name: str = "onnx-fp32"):
    meta, npz = run / "exports" / name / "metadata.json", run / "checks" / "pytorch-fp32.npz"
    if not (meta.is_file() and npz.is_file()):
        pytest.skip(f"{run} has no finished run (metadata and saved check)")
    return json.loads(meta.read_text()), np.load(npz)


# ----------------------------------------------------------------------------- pose
def test_blur_equals_opencv_gaussian_blur_with_replicated_border():
    hm = _targets(np.random.default_rng(0), 3, noise=0.05)
    mine = rt_pose.gaussian_blur(hm, 2.0)
    ref = np.stack([[cv2.GaussianBlur(m, (13, 13), 2.0, sigmaY=2.0, borderType=cv2.BORDER_REPLICATE)
                     for m in maps] for maps in hm])
    assert np.abs(mine - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_dark_and_quarter_equal_the_opencv_decoder_on_generated_targets(noise):
    hm = _targets(np.random.default_rng(1), 12, noise=noise)
    coords, peaks = rt_pose.decode_heatmaps(hm, "dark", 2.0)
    ref, ref_peaks = _cv2_dark(hm, 2.0)
    assert np.abs(coords - ref).max() <= PX and np.array_equal(peaks, ref_peaks)
    assert np.abs(coords - np.round(coords)).max() > 0.1  # refinement really moved peaks
    assert np.abs(rt_pose.decode_heatmaps(hm, "quarter")[0] - _loop_quarter(hm)).max() == 0


def test_dark_and_quarter_equal_the_opencv_decoder_on_real_heatmaps():
    _, saved = _real(POSE_RUN)
    hm = saved["outputs"]
    coords, peaks = rt_pose.decode_heatmaps(hm, "dark", 2.0)
    ref, ref_peaks = _cv2_dark(hm, 2.0)
    assert np.abs(coords - ref).max() <= PX and np.array_equal(peaks, ref_peaks)
    assert np.abs(rt_pose.decode_heatmaps(hm, "quarter")[0] - _loop_quarter(hm)).max() == 0


def test_crop_and_letterbox_contexts():
    from hrnet_edge.data import box_to_center_scale

    for box in ([10.0, 20.0, 30.0, 90.0], [5.5, 0.0, 120.0, 40.0]):
        center, scale = box_to_center_scale(box, 96 / 128)
        crop = rt_pose.box_to_crop(box, (128, 96))
        np.testing.assert_allclose(crop["center"], center, rtol=1e-6)
        np.testing.assert_allclose(crop["scale"], scale, rtol=1e-6)
    assert letterbox_context((256, 320), (160, 160)) == {"scale": 0.5, "orig_hw": [256, 320]}
    with pytest.raises(DecodeInputError, match="x, y, w, h"):
        rt_pose.box_to_crop([0, 0, 0, 5], (128, 96))
    with pytest.raises(DecodeInputError, match="orig_hw"):
        letterbox_context((0, 5), (160, 160))


def test_crop_affine_equals_opencv():
    centers, scales, rots = np.array([[70.3, 41.9], [10.0, 200.5]]), np.array([[55.0, 73.3], [90, 120]]), [23.0, -8.0]
    for c, s, r in zip(centers, scales, rots):
        np.testing.assert_allclose(rt_pose.get_affine_transform(c, s, r, (128, 96)), _cv2_crop(c, s, r, (128, 96)),
                                   atol=1e-4)
    coords = np.random.default_rng(2).uniform(0, 24, (2, 17, 2))
    mine = rt_pose.heatmap_to_image(coords, centers, scales, (128, 96), (32, 24), np.array(rots))
    assert np.abs(mine - _cv2_to_image(coords, centers, scales, rots, (128, 96), (32, 24))).max() <= PX


def test_pose_decoder_from_metadata(metas):
    """Keypoints in the original image: flip averaging, DARK, the crop affine and the
    person score, against the OpenCV references and the true joints."""
    rng = np.random.default_rng(3)
    h, w = POSE_IN
    centers, scales = np.array([[80.0, 60.0], [30.5, 200.0]]), np.array([[48.0, 64.0], [96.0, 128.0]])
    rots = [0.0, 15.0]
    # true joints in the image, inside the crops, over 3 sigma from the heatmap border
    # (where the replicated-edge blur is exact, so DARK recovers them)
    joints = [rt_pose.affine_points(np.stack([rng.uniform(30, w - 30, 17), rng.uniform(30, h - 30, 17)], 1),
                                    _cv2_crop_inv(c, s, r)) for c, s, r in zip(centers, scales, rots)]
    crops = [rt_pose.affine_points(j, _cv2_crop(c, s, r, POSE_IN).astype(np.float64))
             for j, c, s, r in zip(joints, centers, scales, rots)]
    hm = np.stack([gaussian_targets(j, np.full(17, 2), POSE_IN, sigma=2.0)[0] for j in crops])
    perm = flip_permutation()
    flipped = 0.8 * hm[:, perm, :, ::-1]  # what the mirrored crops would give, weaker
    dec = decoder_for(metas["pose"])
    out = dec.decode(hm, {"center": centers, "scale": scales, "rotation": rots, "flipped": flipped})
    avg = 0.5 * (hm + 0.8 * hm)
    ref_c, ref_p = _cv2_dark(avg, 2.0)
    ref_xy = _cv2_to_image(ref_c, centers, scales, rots, POSE_IN, hm.shape[2:])
    assert out["coordinates"] == "image" and out["keypoints"].shape == (2, 17, 3)
    assert np.abs(out["keypoints"][..., :2] - ref_xy).max() <= PX
    assert np.abs(out["keypoints"][..., :2] - np.stack(joints)).max() < 0.05  # back where they were
    np.testing.assert_allclose(out["keypoints"][..., 2], ref_p[..., 0])
    np.testing.assert_allclose(out["person_scores"], [p[p > 0.2].mean() for p in ref_p[..., 0]], rtol=1e-6)
    assert out["keypoint_names"] == list(KEYPOINT_NAMES)
    # an NHWC artifact (TFLite) gives the same keypoints from its transposed output
    nhwc = copy.deepcopy(metas["pose"])
    nhwc["output"]["layout"] = "NHWC"
    again = decoder_for(nhwc).decode(hm.transpose(0, 2, 3, 1), {"center": centers, "scale": scales, "rotation": rots,
                                                                "flipped": flipped.transpose(0, 2, 3, 1)})
    np.testing.assert_array_equal(again["keypoints"], out["keypoints"])
    # without a crop context: model-input pixels; the quarter decoder when metadata says so
    quarter = copy.deepcopy(metas["pose"])
    quarter["output"]["decoding"]["decoder"] = "quarter"
    q = decoder_for(quarter).decode(hm[:1])
    assert q["coordinates"] == "input"
    np.testing.assert_allclose(q["keypoints"][0, :, :2], (_loop_quarter(hm[:1])[0] + 0.5) * 4 - 0.5)


def _cv2_crop_inv(center, scale, rot):
    return cv2.invertAffineTransform(_cv2_crop(center, scale, rot, POSE_IN)).astype(np.float64)


def test_pose_decoder_reproduces_the_saved_check():
    from hrnet_edge.data import CocoKeypoints

    meta, saved = _real(POSE_RUN)
    data = POSE_RUN / "data"
    ds = CocoKeypoints(str(data / "annotations/person_keypoints_val2017.json"), str(data / "images/val2017"),
                       input_size=tuple(meta["model_config"]["input_size"]), train=False)
    arrays = ds.instance_arrays()
    assert np.array_equal(arrays["image_id"], saved["ids"])
    out = decoder_for(meta).decode(saved["outputs"], {"center": arrays["center"], "scale": arrays["scale"]})
    assert np.abs(out["keypoints"] - saved["decoded"]).max() <= PX
    # the crop context of a person box is the one the evaluation cropped with
    size = tuple(meta["model_config"]["input_size"])
    for box, center, scale in list(zip(arrays["bbox"], arrays["center"], arrays["scale"]))[:20]:
        crop = rt_pose.box_to_crop(box, size)
        np.testing.assert_allclose(crop["center"], center, rtol=1e-6)
        np.testing.assert_allclose(crop["scale"], scale, rtol=1e-6)


# ----------------------------------------------------------------------------- det
def _det_raw(rng, num_points: int, num_classes: int = 3) -> np.ndarray:
    raw = rng.normal(0, 0.5, (num_points, 5 + num_classes)).astype(np.float32)
    raw[:, 5:] -= 4.0
    hot = rng.choice(num_points, 40, replace=False)
    raw[hot, 5 + rng.integers(0, num_classes, 40)] = rng.uniform(0, 4, 40)
    raw[hot, 4] = rng.uniform(0, 3, 40)
    raw[hot, :4] = rng.uniform(0.5, 2.0, (40, 4))
    return raw


def test_det_decoder_from_metadata_reproduces_hrnet_edge(metas):
    from hrnet_edge.evaluation.detection import DecodeConfig, decode, point_grid, to_original

    dec = decoder_for(metas["det"])
    assert dec.config.to_dict() == metas["det_cfg"].to_dict() and dec.input_size == DET_IN and dec.levels == 4
    raw = _det_raw(np.random.default_rng(4), point_grid(DET_IN, 4)[0].shape[0])
    out = dec.decode(raw[None], {"scale": 0.5, "orig_hw": (120, 100)})
    ref = to_original(decode(raw, DET_IN, 4, metas["det_cfg"]), 0.5, (120, 100))
    assert 0 < len(ref) <= 7 and out["coordinates"] == "image"
    np.testing.assert_array_equal(out["boxes"], ref.boxes)
    np.testing.assert_array_equal(out["scores"], ref.scores)
    np.testing.assert_array_equal(out["classes"], ref.classes)
    assert out["category_ids"].tolist() == [[2, 4, 9][c] for c in ref.classes]
    assert out["labels"] == ["abc"[c] for c in ref.classes]
    assert len(decode(raw, DET_IN, 4, DecodeConfig())) > 7  # the metadata's config mattered
    # the short form (no written-out config): score_threshold and nms_iou
    short = copy.deepcopy(metas["det"])
    short["output"]["decoding"] = {"steps": [], "score_threshold": 0.2, "nms_iou": 0.3}
    d2 = decoder_for(short).decode(raw)
    ref2 = decode(raw, DET_IN, 4, DecodeConfig(score_threshold=0.2, iou_threshold=0.3))
    assert d2["coordinates"] == "input" and np.array_equal(d2["boxes"], ref2.boxes) and len(ref2)


def test_det_decoder_reproduces_the_saved_check():
    from hrnet_edge.data.coco_instances import load_coco_instances

    meta, saved = _real(DET_RUN)
    ds = load_coco_instances(DET_RUN / "data", "val", tuple(meta["model_config"]["input_size"]), train=False)
    dec, rows = decoder_for(meta), saved["decoded"]
    for i in range(8):
        info = ds.letterbox_info(i)
        assert info["image_id"] == saved["ids"][i]
        assert letterbox_context(info["orig_hw"], dec.input_size)["scale"] == pytest.approx(info["scale"], rel=1e-12)
        out = dec.decode(saved["outputs"][i], {"scale": info["scale"], "orig_hw": info["orig_hw"]})
        mine = rows[rows[:, 0] == i]
        assert len(mine) == len(out["boxes"]) > 0
        assert np.abs(mine[:, 1:5] - out["boxes"]).max() <= PX
        np.testing.assert_array_equal(mine[:, 5].astype(np.float32), out["scores"])
        np.testing.assert_array_equal(mine[:, 6], out["classes"])


# ----------------------------------------------------------------------------- seg / cls
def test_seg_decoder_equals_torch_bilinear_and_argmax(metas):
    rng = np.random.default_rng(5)
    raw, flipped = rng.normal(size=(2, 2, 5, 8, 16)).astype(np.float32)
    dec = decoder_for(metas["seg"])
    out = dec.decode(raw, {"size": (45, 70), "flipped": flipped})
    avg = torch.from_numpy(raw) + torch.from_numpy(flipped).flip(-1)
    ref = torch.nn.functional.interpolate(0.5 * avg, size=(45, 70), mode="bilinear", align_corners=False).argmax(1)
    assert out["labels"].dtype == np.uint8 and np.array_equal(out["labels"], ref.numpy())
    assert out["classes"] == list("vwxyz") and len(out["palette"]) == 5
    # default size: the model input; NHWC outputs give the same labels
    up = torch.nn.functional.interpolate(torch.from_numpy(raw), size=SEG_IN, mode="bilinear", align_corners=False)
    nhwc = copy.deepcopy(metas["seg"])
    nhwc["output"]["layout"] = "NHWC"
    assert np.array_equal(decoder_for(nhwc).decode(raw.transpose(0, 2, 3, 1))["labels"], up.argmax(1).numpy())


def test_seg_decoder_reproduces_the_saved_check():
    meta, saved = _real(SEG_RUN)
    out = decoder_for(meta).decode(saved["outputs"][:12], {"size": saved["decoded"].shape[1:]})
    np.testing.assert_array_equal(out["labels"], saved["decoded"][:12])


def test_cls_decoder_ranks_as_the_evaluation(metas):
    from hrnet_edge.evaluation.classification import class_ranks

    logits = np.random.default_rng(6).normal(size=(5, 6)).astype(np.float32)
    logits[1, [0, 3, 4]] = 2.5  # a tie: the lower index first
    logits[2, 1] = np.nan  # NaN ranks last
    out = decoder_for(metas["cls"]).decode(logits, {"k": 3})
    for n in range(5):  # indices[n, r] is the class the evaluation ranks r-th
        ranks = [class_ranks(logits[n:n + 1], [c])[0] for c in range(6)]
        assert out["indices"][n].tolist() == [ranks.index(r) for r in range(3)]
    assert out["indices"][1].tolist() == [0, 3, 4] and 1 not in out["indices"][2]
    ok = [0, 1, 3, 4]
    probs = torch.softmax(torch.from_numpy(logits[ok]).double(), 1).numpy()
    np.testing.assert_allclose(out["probabilities"][ok], np.take_along_axis(probs, out["indices"][ok], 1), rtol=1e-6)
    assert out["labels"][1] == ["a", "d", "e"]
    assert decoder_for(metas["cls"]).decode(logits[0])["indices"].shape == (1, 5)  # default k 5


def test_cls_decoder_reproduces_the_saved_check():
    meta, saved = _real(CLS_RUN)
    out = decoder_for(meta).decode(saved["outputs"], {"k": 1})
    np.testing.assert_array_equal(out["indices"][:, 0], saved["decoded"])


# ----------------------------------------------------------------------------- one source, errors
def test_the_project_decodes_with_the_runtime():
    from hrnet_edge_runtime.decode import cls, det, seg

    import hrnet_edge.data.heatmaps as hm
    import hrnet_edge.evaluation.classification as ec
    import hrnet_edge.evaluation.detection as ed
    import hrnet_edge.evaluation.pose as ep
    import hrnet_edge.evaluation.segmentation as es

    assert hm.decode_heatmaps is ep.decode_heatmaps is rt_pose.decode_heatmaps
    assert hm.heatmap_to_image is rt_pose.heatmap_to_image and hm.flip_heatmaps is rt_pose.flip_heatmaps
    assert ed.nms is det.nms and ed.Detections is det.Detections and issubclass(ed.DecodeConfig, det.DecodeConfig)
    assert es.upsample_logits is seg.upsample_logits and es.label_map is seg.label_map
    assert ec.predict is cls.predict
    # the project's names keep the project's errors, chained to the runtime's
    with pytest.raises(ConfigError, match="iou_threshold") as e:
        ed.DecodeConfig(iou_threshold=2.0)
    assert isinstance(e.value.__cause__, DecodeConfigError)
    with pytest.raises(DataError, match="P = 20") as e:
        ed.decode(np.zeros((3, 7)), (16, 16), 2)
    assert isinstance(e.value.__cause__, DecodeInputError)


def _edit(meta: dict, path: str, value=None, delete: bool = False) -> dict:
    meta = copy.deepcopy(meta)
    *parents, last = path.split(".")
    node = meta
    for p in parents:
        node = node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    return meta


@pytest.mark.parametrize("task, path, value, delete, key", [
    ("pose", "task", None, True, "task"),
    ("pose", "task", "depth", False, "task"),
    ("pose", "task", ["pose"], False, "task"),
    ("pose", "output.decoding.decoder", None, True, "output.decoding.decoder"),
    ("pose", "output.decoding.decoder", "soft-argmax", False, "output.decoding.decoder"),
    ("pose", "output.decoding.target_sigma", 0, False, "output.decoding.target_sigma"),
    ("pose", "output.flip_pairs", [[1, 40]], False, "output.flip_pairs"),
    ("pose", "input.layout", "CHWN", False, "input.layout"),
    ("det", "output.decoding.config.iou_threshold", 0.0, False, "output.decoding.config"),
    ("det", "output.decoding.config.nms", 0.5, False, "output.decoding.config"),
    ("det", "output.strides", [4, 8, 16, 64], False, "output.strides"),
    ("det", "output.category_ids", [1], False, "output.category_ids"),
    ("seg", "output.layout", "NDHW", False, "output.layout"),
    ("seg", "output.palette", [[0, 0, 0]], False, "output.palette"),
    ("cls", "output.classes", ["a"], False, "output.classes"),
])
def test_metadata_errors_name_the_key(metas, task, path, value, delete, key):
    with pytest.raises(MetadataError) as e:
        decoder_for(_edit(metas[task], path, value, delete))
    assert e.value.key == key and key in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, RuntimeErrorBase)  # hrnet-edge-run reports it as one line


def test_bad_outputs_and_contexts_are_typed(metas):
    pose, det, seg, cls = (decoder_for(metas[t]) for t in ("pose", "det", "seg", "cls"))
    hm = np.zeros((1, 17, 16, 12), np.float32)
    cases = [
        (lambda: pose.decode(hm[:, :5]), "K = 17"),
        (lambda: pose.decode(hm, {"center": [1, 2]}), "'scale'"),
        (lambda: pose.decode(hm, {"center": [1, 2], "scale": [[1, 2], [3, 4]]}), "'scale'"),
        (lambda: pose.decode(hm, {"flipped": hm[:, :, :8]}), "same crops"),
        (lambda: pose.decode(hm, {"center": "middle", "scale": [1, 2]}), "'center'"),
        (lambda: det.decode(np.zeros((2, 340, 8))), r"\(P, 5 \+ C\)"),
        (lambda: det.decode(np.zeros((340, 8)), {"scale": 0.0, "orig_hw": (9, 9)}), "scale"),
        (lambda: det.decode(np.zeros((340, 8)), {"scale": 1.0, "orig_hw": 9}), "orig_hw"),
        (lambda: det.decode(np.zeros((340, 8)), {"scale": "half", "orig_hw": (9, 9)}), "'scale'"),
        (lambda: seg.decode(np.zeros((1, 4, 8, 16))), "C = 5"),
        (lambda: cls.decode(np.zeros((1, 6)), {"k": 0}), "positive integer k"),
    ]
    for call, message in cases:
        with pytest.raises(DecodeInputError, match=message):
            call()


# ----------------------------------------------------------------------------- torch-free
BLOCKED_RUN = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    BLOCK = ("torch", "cv2", "hrnet_edge", "converters", "quantization")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    import hrnet_edge_runtime.decode as pkg
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")]
    for name in names:
        importlib.import_module(name)
    folder = sys.argv[1]
    out = {}
    for task, ctx in (("pose", {"center": [50.0, 60.0], "scale": [48.0, 64.0]}),
                      ("det", {"scale": 0.5, "orig_hw": [120, 100]}), ("seg", {"size": [40, 70]}), ("cls", {"k": 2})):
        meta = json.load(open(f"{folder}/{task}.json"))
        res = pkg.decoder_for(meta).decode(np.load(f"{folder}/{task}.npy"), ctx)
        out.update({f"{task}_{k}": np.asarray(v) for k, v in res.items()
                    if isinstance(v, np.ndarray)})
    np.savez(f"{folder}/out.npz", **out)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
    print(json.dumps({"modules": names, "leaked": leaked}))
""")


def test_decoders_import_and_run_without_torch_cv2_or_the_project(metas, tmp_path):
    from hrnet_edge.evaluation.detection import decode, point_grid, to_original

    rng = np.random.default_rng(7)
    raws = {"pose": _targets(rng, 1, noise=0.02), "det": _det_raw(rng, point_grid(DET_IN, 4)[0].shape[0]),
            "seg": rng.normal(size=(1, 5, 8, 16)).astype(np.float32), "cls": rng.normal(size=(2, 6)).astype(np.float32)}
    for task, raw in raws.items():
        (tmp_path / f"{task}.json").write_text(json.dumps(metas[task]))
        np.save(tmp_path / f"{task}.npy", raw)
    run = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["leaked"] == []
    for mod in ("pose", "det", "seg", "cls", "errors", "nms", "agreement"):
        assert f"hrnet_edge_runtime.decode.{mod}" in report["modules"]
    got = np.load(tmp_path / "out.npz")
    # the same results as the project computes them (with torch and cv2 loaded)
    c, p = _cv2_dark(raws["pose"], 2.0)
    xy = _cv2_to_image(c, [[50.0, 60.0]], [[48.0, 64.0]], [0.0], POSE_IN, raws["pose"].shape[2:])
    assert np.abs(got["pose_keypoints"][..., :2] - xy).max() <= PX
    ref = to_original(decode(raws["det"], DET_IN, 4, metas["det_cfg"]), 0.5, (120, 100))
    np.testing.assert_array_equal(got["det_boxes"], ref.boxes)
    np.testing.assert_array_equal(got["seg_labels"], label_map(raws["seg"], (40, 70)))
    np.testing.assert_array_equal(got["cls_indices"], topk(raws["cls"], 2)[0])
