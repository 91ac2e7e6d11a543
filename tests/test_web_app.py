"""The sample web app (apps/web): onnxruntime-web in Debian's chromium, driven by playwright-core.

The artifact is the ONNX fp32 export of the tiny pose pipeline run (conftest's
``pose_pipeline_run``: hrnet_w8_pose at 128x96, trained 5 epochs), with the metadata
the pipeline writes (keypoint names, skeleton, flip pairs, DARK decoder, flip test). The picture is a person of the project's synthetic pose generator
(its JPEG decoded once and written as PNG, so that the browser and Python see the same
bytes) and its annotated box.

Checked:
* without a browser (Node alone): the page's crop equals OpenCV's ``warpAffine`` (the
  checks' crop) to one grey level, and its decoder (DARK and quarter, with and without
  the flip test) gives the Python runtime's keypoints on the same heatmaps;
* in chromium with a phone viewport: the keypoints the page computes on the uploaded
  photo (person box typed into the page's form) and on a frame of the fake camera (fed
  from a .y4m of the same picture, same box) equal the Python runtime's on the same
  pixels within one pixel; the model's sha256 is verified by the page; screenshots are
  saved. (With an untrained net instead, near-equal maxima made keypoints jump by up to
  6 picture pixels between crops that differ by one grey level in 0.03 % of values: the
  page computes the crop in float64, OpenCV in float32 with its own rounding.)
* the page's server answers on 127.0.0.1 only, serves nothing outside its roots, and a
  bad ``--model`` is one line and exit 2.

The README's test command installs chromium (apt) and the npm packages (``npm ci``) and
sets ``HRNET_EDGE_REQUIRE_BROWSER=1``, so in CI a missing piece fails instead of skipping.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
cv2 = pytest.importorskip("cv2", reason="opencv is not installed")

from conftest import need_for_apps, run_page_code  # noqa: E402
from hrnet_edge_runtime.adapters import open_adapter  # noqa: E402
from hrnet_edge_runtime.decode.pose import CROP_PADDING, PoseDecoder, box_to_crop, get_affine_transform  # noqa: E402
from hrnet_edge_runtime.inputs import pixels_to_input, read_image  # noqa: E402
from hrnet_edge_runtime.metadata import load_artifact  # noqa: E402

pytestmark = pytest.mark.export

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "apps" / "web"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def node(node_exe) -> str:
    for pkg in ("onnxruntime-web", "playwright-core"):
        need_for_apps((WEB / "node_modules" / pkg / "package.json").is_file(),
                      f"apps/web/node_modules/{pkg} is missing: run `npm ci` in apps/web (scripts/setup_apps.sh does)")
    return node_exe


@pytest.fixture(scope="module")
def artifact(pose_pipeline_run) -> Path:
    """The ONNX fp32 artifact of the tiny pose pipeline run (trained: its heatmaps have
    peaks; on an untrained net near-equal maxima make any two crops' keypoints jump)."""
    art = pose_pipeline_run[0] / "exports" / "onnx-fp32"
    assert (art / "model.onnx").is_file(), "the pose pipeline run exported no onnx-fp32"
    return art


@pytest.fixture(scope="module")
def person(tmp_path_factory) -> tuple[Path, np.ndarray, list[float]]:
    """(PNG path, its RGB pixels, the largest annotated person box x, y, w, h)."""
    from hrnet_edge.data.synthetic_pose import generate_synthetic_pose

    root = tmp_path_factory.mktemp("web_person")
    paths = generate_synthetic_pose(root / "data", num_train=0, num_val=3, image_size=(240, 320),
                                    seed=11, workers=1)
    ann = json.loads(Path(paths["val_ann"]).read_text())
    best = max(ann["annotations"], key=lambda a: a["bbox"][2] * a["bbox"][3])
    image = next(i for i in ann["images"] if i["id"] == best["image_id"])
    rgb = read_image(Path(paths["val_images"]) / image["file_name"])
    png = root / "person.png"
    cv2.imwrite(str(png), rgb[:, :, ::-1])
    return png, rgb, [float(v) for v in best["bbox"]]


def python_keypoints(art_dir: Path, rgb: np.ndarray, box) -> np.ndarray:
    """What the host checks compute: OpenCV crop, ONNX Runtime, flip test, PoseDecoder."""
    from hrnet_edge.data.heatmaps import warp_crop

    art = load_artifact(art_dir)
    meta = json.loads((art_dir / "metadata.json").read_text())
    size = (art.input.height, art.input.width)
    crop = box_to_crop(box, size, meta["output"].get("person_crop", {}).get("padding", CROP_PADDING))
    patch = warp_crop(rgb, get_affine_transform(crop["center"], crop["scale"], 0.0, size), size)
    with open_adapter(art) as adapter:
        raw = adapter.run(pixels_to_input(patch, art))
        flipped = adapter.run(pixels_to_input(np.ascontiguousarray(patch[:, ::-1]), art))
    out = PoseDecoder(meta).decode(raw, {**crop, "flipped": flipped})
    return out["keypoints"][0]


def test_page_crop_and_decoder_equal_the_python_runtime(node, artifact, person):
    png, rgb, box = person
    meta = json.loads((artifact / "metadata.json").read_text())
    assert meta["output"]["person_crop"]["padding"] == CROP_PADDING  # the crop an app must make
    art = load_artifact(artifact)
    size = (art.input.height, art.input.width)
    boxes = [box, [0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0])], [box[0] - 40, box[1] + 10, box[2] * 0.6, box[3]]]
    crops, decodes, expected = [], [], []
    with open_adapter(art) as adapter:
        for b in boxes:
            crop = box_to_crop(b, size)
            patch = cv2.warpAffine(rgb, get_affine_transform(crop["center"], crop["scale"], 0.0, size),
                                   (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            crops.append({"rgb_b64": base64.b64encode(rgb.tobytes()).decode(), "width": rgb.shape[1],
                          "height": rgb.shape[0], "box": dict(zip("xywh", b))})
            raw = adapter.run(pixels_to_input(patch, art))
            flipped = adapter.run(pixels_to_input(np.ascontiguousarray(patch[:, ::-1]), art))
            expected.append((patch, raw, flipped, crop))
            for fl in (flipped, None):
                decodes.append({"heatmaps": raw.ravel().tolist(), "dims": list(raw.shape),
                                "flipped": None if fl is None else fl.ravel().tolist(), "box": dict(zip("xywh", b))})
    for decoder in ("dark", "quarter"):
        m = json.loads(json.dumps(meta))
        m["output"]["decoding"]["decoder"] = decoder
        done = run_page_code(node, {"meta": m, "crops": crops, "decodes": decodes})
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        for c, (patch, *_rest) in zip(got["crops"], expected):
            page = np.frombuffer(base64.b64decode(c["rgb_b64"]), np.uint8).reshape(patch.shape)
            diff = np.abs(page.astype(int) - patch.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
        py = PoseDecoder(m)
        for i, d in enumerate(got["decodes"]):
            _, raw, flipped, crop = expected[i // 2]
            ctx = {**crop, "flipped": flipped if i % 2 == 0 else None}
            want = py.decode(raw, ctx)
            xy = np.array([[k["x"], k["y"]] for k in d["keypoints"]])
            score = np.array([k["score"] for k in d["keypoints"]])
            np.testing.assert_allclose(xy, want["keypoints"][0, :, :2], atol=1e-3)
            np.testing.assert_allclose(score, want["keypoints"][0, :, 2], atol=1e-5)
            assert abs(d["personScore"] - float(want["person_scores"][0])) < 1e-5
            assert [k["name"] for k in d["keypoints"]] == meta["output"]["keypoint_names"]
    # A metadata.json the page cannot use is named, not guessed around.
    bad = json.loads(json.dumps(meta))
    bad["output"]["decoding"]["decoder"] = "argmax2"
    done = run_page_code(node, {"meta": bad, "decodes": []})
    assert done.returncode != 0 and "output.decoding.decoder" in done.stderr and "dark, quarter" in done.stderr


def _write_y4m(path: Path, rgb: np.ndarray, frames: int = 3) -> None:
    """A 4:2:0 y4m video of one still picture (BT.601 full range), for chromium's fake camera."""
    h, w = rgb.shape[:2]
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv.tobytes())


@pytest.fixture(scope="module")
def server(node, artifact):
    proc = subprocess.Popen([node, str(WEB / "serve.mjs"), "--model", str(artifact), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("serving http://127.0.0.1:"):
        proc.kill()
        pytest.fail(f"serve.mjs did not start: {line!r} {proc.stderr.read()}")
    url = line.split()[1]
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_server_serves_its_roots_only(server, node, tmp_path):
    host, port = server.split("//")[1].rstrip("/").split(":")
    assert host == "127.0.0.1"

    def get(path: str) -> int:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status

    for ok in ("/", "/src/pose.js", "/model/metadata.json", "/model/model.onnx", "/ort/ort.wasm.min.mjs"):
        assert get(ok) == 200, ok
    for bad in ("/model/../../package.json", "/ort/../../../package.json", "/src/%2e%2e/serve.mjs",
                "/package.json", "/node_modules/playwright-core/package.json", "/etc/passwd"):
        assert get(bad) == 404, bad
    done = subprocess.run([node, str(WEB / "serve.mjs"), "--model", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith("serve.mjs: ") and "model.onnx does not exist" in done.stderr


def test_page_in_chromium_matches_python_on_photo_and_camera(server, node, artifact, person, tmp_path):
    need_for_apps(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/setup_apps.sh does)")
    png, rgb, box = person
    video = tmp_path / "camera.y4m"
    _write_y4m(video, rgb)
    out = tmp_path / "browser"
    done = subprocess.run([node, str(WEB / "test" / "browser.mjs"), "--url", server, "--image", str(png),
                           "--box", ",".join(f"{v:g}" for v in box), "--video", str(video), "--out", str(out),
                           "--chromium", CHROMIUM], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    res = json.loads((out / "result.json").read_text())
    assert not [m for m in res["log"] if m.startswith(("pageerror", "error"))], res["log"]
    meta = json.loads((artifact / "metadata.json").read_text())
    assert res["model"]["sha256Verified"] and res["model"]["sha256"] == meta["artifact"]["sha256"]
    assert res["viewport"]["width"] < 500  # a phone's

    photo = res["photo"]
    assert photo["error"] is None and (photo["width"], photo["height"]) == (rgb.shape[1], rgb.shape[0])
    assert [photo["box"][k] for k in "xywh"] == pytest.approx(box)
    want = python_keypoints(artifact, rgb, box)
    got = np.array([[k["x"], k["y"]] for k in photo["keypoints"]])
    dist = np.linalg.norm(got - want[:, :2], axis=1)
    assert dist.max() <= 1.0, dist
    np.testing.assert_allclose([k["score"] for k in photo["keypoints"]], want[:, 2], atol=0.02)

    cam = res["camera"]
    frame = read_image(out / "camera_frame.png")
    assert cam["error"] is None and (cam["width"], cam["height"]) == (rgb.shape[1], rgb.shape[0]) == frame.shape[1::-1]
    # The camera delivered our video (through 4:2:0 and back), not chromium's own test pattern.
    assert np.abs(frame.astype(int) - rgb.astype(int)).mean() < 8
    assert [cam["box"][k] for k in "xywh"] == pytest.approx(box)
    want = python_keypoints(artifact, frame, box)
    got = np.array([[k["x"], k["y"]] for k in cam["keypoints"]])
    dist = np.linalg.norm(got - want[:, :2], axis=1)
    assert dist.max() <= 1.0, dist
    for shot in ("photo.png", "camera.png"):
        img = read_image(out / shot)  # kept in pytest's tmp_path for a look
        assert img.shape[1] == round(res["viewport"]["width"] * res["viewport"]["dpr"])
