"""The torch-free device runner (apps/runtime: ``hrnet_edge_runtime``, ``hrnet-edge-run``).

Artifacts are exported inside the test from a settled hrnet_w8_pose (128x96) with the
project's own converters (ONNX fp32, OpenVINO fp32, ONNX int8u8 from the NNCF fixture,
TFLite fp32), and timed on JPEGs written by the project's synthetic pose generator.
Checked: no module of the package imports torch or the training packages, even while
running the CLI; a picture fed as a device feeds it gives the host checks' outputs (the
checks run these adapters too); the exports match PyTorch in tests/test_export_*; a uint8 artifact takes
bytes; the result document is complete and ordered; bad input is one line and exit 2;
ORT and OpenVINO profiles hold per-op records. When ``runs/default`` holds a finished
run, copies of its TFLite INT8 and ExecuTorch artifacts are checked too.
"""
from __future__ import annotations

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

from hrnet_edge_runtime import errors as rt_errors  # noqa: E402
from hrnet_edge_runtime.adapters import open_adapter  # noqa: E402
from hrnet_edge_runtime.inputs import image_to_input, list_images, random_input, read_image, resize_rgb  # noqa: E402
from hrnet_edge_runtime.metadata import load_artifact, sha256_path, verify_sha256  # noqa: E402
from hrnet_edge_runtime.result import FIELDS, LATENCY_FIELDS, validate_result  # noqa: E402
from hrnet_edge_runtime.stats import latency_stats  # noqa: E402

pytestmark = pytest.mark.export

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "hrnet_edge", "converters", "quantization", "executorch")
EXISTING = ROOT / "runs" / "default" / "exports"
EXISTING_COPIES = ("onnx-fp32", "openvino-fp32", "tflite-int8", "onnx-int8u8", "executorch-fp32")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Six 160x120 JPEGs of the project's synthetic pose generator (resized to 128x96 by the runner)."""
    from hrnet_edge.data.synthetic_pose import generate_synthetic_pose

    paths = generate_synthetic_pose(tmp_path_factory.mktemp("pose_data") / "data", num_train=0, num_val=6,
                                    image_size=(160, 120), seed=7, workers=1)
    return paths["val_images"]


@pytest.fixture(scope="module")
def pictures(image_dir) -> list[np.ndarray]:
    return [read_image(p) for p in list_images(image_dir)]


class Exports:
    """Artifacts of one settled hrnet_w8_pose, exported on first use with the project's
    converters: ``get("onnx-fp32")`` -> folder, or a skip when the backend is missing
    (int8u8 needs nncf, tflite needs onnx2tf). Lazy, so a test pays only for what it uses."""

    def __init__(self, root: Path, model, request):
        self.root, self.model, self.request, self.done = root, model, request, {}

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except pytest.skip.Exception:
            return False
        return True

    def __getitem__(self, name: str) -> Path:
        return self.get(name)

    def get(self, name: str) -> Path:
        if name not in self.done:
            self.done[name] = self._export(name)
        if isinstance(self.done[name], str):
            pytest.skip(self.done[name])
        return self.done[name]

    def _export(self, name: str) -> Path | str:
        from converters.base import ExportJob
        from converters.metadata import base_metadata
        from converters.onnx import export_onnx
        from converters.registry import get_target

        target_name, precision = name.split("-")
        target = get_target(target_name)
        ok, reason = target.available()
        if not ok:
            return reason
        kw = {}
        if target_name == "tflite":
            kw["onnx_path"] = export_onnx(self.model, self.root / "opset17.onnx", (128, 96))
        if precision == "int8u8":
            try:
                kw["qat_model"] = self.request.getfixturevalue("nncf_pose_model")
            except pytest.skip.Exception as exc:
                return str(exc)
        job = ExportJob(model=self.model, precision=precision, out_dir=self.root / name,
                        metadata=base_metadata(self.model, {}, "ab" * 32), **kw)
        return target.export(job).path.parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory, settled_pose_model, request) -> Exports:
    return Exports(tmp_path_factory.mktemp("runtime_artifacts"), settled_pose_model, request)


def _artifact(exported, name: str) -> Path:
    return exported.get(name)




# --- (a), (d), (f): the CLI in a process where torch and the project cannot be imported ----

_TORCH_FREE = IMPORT_BLOCKER + textwrap.dedent("""
    import importlib, json, pkgutil
    try:
        import torch  # noqa: F401
        raise SystemExit("the import blocker does not work")
    except ImportError:
        pass
    import hrnet_edge_runtime
    names = ["hrnet_edge_runtime"]
    for mod in pkgutil.walk_packages(hrnet_edge_runtime.__path__, "hrnet_edge_runtime."):
        if mod.name != "hrnet_edge_runtime.__main__":  # it runs the CLI on import
            importlib.import_module(mod.name)
            names.append(mod.name)
    from hrnet_edge_runtime.cli import main
    codes = {{}}
    for name, art, out in {runs!r}:
        try:
            codes[name] = main([art, "--threads", "2", "--warmup", "2", "--iterations", "12",
                                "--images", {images!r}, "--profile", "--label", "ci", "--out", out])
        except SystemExit as exc:
            codes[name] = exc.code
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({{"modules": names, "codes": codes, "leaked": leaked}}))
""")


@pytest.fixture(scope="module")
def torch_free_run(exported, image_dir, tmp_path_factory):
    """Run the CLI on the ONNX and OpenVINO fp32 artifacts in a torch-free subprocess."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    out = tmp_path_factory.mktemp("results")
    runs = [(name, str(_artifact(exported, name)), str(out / f"{name}.json"))
            for name in ("onnx-fp32", "openvino-fp32")]
    code = _TORCH_FREE.format(blocked=BLOCKED, runs=runs, images=str(image_dir))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = {name: json.loads(Path(path).read_text()) for name, _art, path in runs}
    return report, results


def test_package_and_cli_run_without_torch_or_the_project(torch_free_run):
    report, results = torch_free_run
    assert report["leaked"] == []
    expected = {"hrnet_edge_runtime.errors", "hrnet_edge_runtime.metadata", "hrnet_edge_runtime.inputs",
                "hrnet_edge_runtime.stats", "hrnet_edge_runtime.host", "hrnet_edge_runtime.result",
                "hrnet_edge_runtime.cli", "hrnet_edge_runtime.adapters.et", "hrnet_edge_runtime.adapters.coreml"}
    assert expected <= set(report["modules"])
    assert report["codes"] == {"onnx-fp32": 0, "openvino-fp32": 0}
    for result in results.values():
        validate_result(result)


def test_result_fields_and_latency_order(torch_free_run, exported):
    _report, results = torch_free_run
    for name, result in results.items():
        assert set(FIELDS) <= set(result) and set(LATENCY_FIELDS) <= set(result["latency"])
        lat = result["latency"]
        assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert lat["iterations"] == 12 and lat["warmup"] == 2 and lat["threads"] == 2
        art = load_artifact(exported.get(name))
        assert result["artifact_sha256"] == art.sha256 and result["sha256_verified"] is True
        assert result["size_bytes"] == art.size_bytes and result["inputs"] == "images:6"
        assert (result["target"], result["precision"], result["task"]) == (art.target, art.precision, "pose")
        assert result["label"] == "ci" and result["peak_rss_mb"] >= result["rss_before_load_mb"] > 0
    ov = results["openvino-fp32"]["runtime"]
    # fp32 must run f32 even on CPUs with BF16 units, where the plugin's default is bf16
    assert ov["inference_precision"] == "f32" and ov["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert "CPU" in ov["available_devices"] and ov["performance_hint"] == "LATENCY"
    assert results["onnx-fp32"]["runtime"]["providers"] == ["CPUExecutionProvider"]


def test_profiles_hold_per_op_records(torch_free_run):
    _report, results = torch_free_run
    for name, conv in (("onnx-fp32", "Conv"), ("openvino-fp32", "Convolution")):
        prof = results[name]["profile"]
        assert prof["available"] is True and prof["iterations"] >= 1, prof
        types = {op["op_type"] for op in prof["ops"]}
        assert any(conv in t for t in types), types
        assert all(op["calls"] >= 1 and op["mean_ms"] >= 0 for op in prof["ops"])


# --- (b), (c): a picture fed as a device feeds it, against the host checks' path ---------------
# The host checks (Target.load -> AdapterRunner) run the same adapters; what differs is the
# way in: the checks convert NCHW float (converters.base.adapter_input) and turn NHWC
# outputs back, a device converts a picture (inputs.image_to_input). Both must agree.

@pytest.mark.parametrize("name", ["onnx-fp32", "openvino-fp32", "tflite-fp32", "onnx-int8u8"])
def test_device_input_path_matches_the_host_checks(exported, pictures, name):
    from converters.registry import get_target

    folder = _artifact(exported, name)
    art = load_artifact(folder)
    runner = get_target(art.target).load(folder, threads=2)
    with open_adapter(art, threads=2) as adapter:
        for rgb in pictures:
            x = image_to_input(rgb, art)
            y = adapter.run(x)
            assert list(y.shape) == art.output["shape"] and y.dtype == np.float32
            if art.output["layout"] == "NHWC":  # the adapter gives the raw TFLite layout
                y = y.transpose(0, 3, 1, 2)
            pixels = resize_rgb(rgb, art.input.height, art.input.width)
            ref = runner(pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
            np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))


@pytest.mark.numerics  # the INT8 side comes from NNCF's torch calibration
def test_uint8_artifact_takes_bytes(exported, pictures, parity):
    u8 = load_artifact(_artifact(exported, "onnx-int8u8"))
    fp = load_artifact(_artifact(exported, "onnx-fp32"))
    assert (u8.input.dtype, u8.input.layout, u8.input.shape) == ("uint8", "NHWC", (1, 128, 96, 3))
    with open_adapter(u8, threads=2) as a8, open_adapter(fp, threads=2) as af:
        assert a8.input_spec.dtype == "uint8"
        with pytest.raises(rt_errors.UsageError, match="uint8"):
            a8.run(image_to_input(pictures[0], fp))  # float NCHW into a uint8 artifact
        xs = [image_to_input(p, u8) for p in pictures]
        assert all(x.dtype == np.uint8 and x.shape == (1, 128, 96, 3) for x in xs)
        out8 = np.concatenate([a8.run(x) for x in xs])
        outf = np.concatenate([af.run(image_to_input(p, fp)) for p in pictures])
    # INT8 of an untrained net against FP32, so loose: measured corr 0.965 and peak
    # agreement 0.60 (AVX-512 EPYC). Bytes fed wrongly score far lower on the same images:
    # BGR order corr 0.62 / peaks 0.05, mirrored 0.56 / 0.04, planes as NHWC 0.53 / 0.0.
    stats = parity(out8, outf)
    assert stats["corr"] > 0.85 and stats["argmax_agreement"] > 0.3, stats


# --- (e): bad input --------------------------------------------------------------------------

def test_sha256_mismatch_is_one_line_exit_2(exported, tmp_path, capsys):
    copy = tmp_path / "tampered"
    shutil.copytree(_artifact(exported, "onnx-fp32"), copy)
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    out = tmp_path / "r.json"
    err = runner_exit2(capsys, [str(copy), "--iterations", "2", "--out", str(out)])
    assert "sha256 mismatch" in err and "model.onnx" in err
    assert not out.exists()
    with pytest.raises(rt_errors.ArtifactError, match="expects"):
        verify_sha256(load_artifact(copy))


def test_unknown_device_lists_the_devices(exported, tmp_path, capsys):
    pytest.importorskip("openvino", reason="openvino is not installed")
    out = tmp_path / "r.json"
    err = runner_exit2(capsys, [str(_artifact(exported, "openvino-fp32")), "--device", "NOSUCH",
                                   "--out", str(out)])
    assert "'NOSUCH'" in err and "CPU" in err and not out.exists()
    err = runner_exit2(capsys, [str(_artifact(exported, "onnx-fp32")), "--device", "NOSUCH",
                                   "--out", str(out)])
    assert "CPUExecutionProvider" in err and not out.exists()


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--iterations", "0"], ["--warmup", "-1"],
                                  ["--iterations", "ten"], ["--hint", "fastest"], ["--images", "/no/such/dir"]])
def test_bad_numbers_and_options_exit_2(exported, tmp_path, capsys, argv):
    out = tmp_path / "r.json"
    runner_exit2(capsys, [str(_artifact(exported, "onnx-fp32")), *argv, "--out", str(out)])
    assert not out.exists()


def test_missing_or_foreign_folder_exits_2(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert "no such artifact folder" in runner_exit2(capsys, [str(tmp_path / "nope"), "--out", str(out)])
    assert "metadata.json" in runner_exit2(capsys, [str(tmp_path), "--out", str(out)])
    assert not out.exists()


def _fake_coreml(src: Path, dst: Path) -> Path:
    """A Core ML artifact folder as the project writes one (metadata and package folder);
    the package content is a stand-in: Linux never opens it."""
    meta = json.loads((src / "metadata.json").read_text())
    shutil.copytree(src, dst)
    (dst / "model.onnx").unlink()
    pkg = dst / "model.mlpackage" / "Data"
    pkg.mkdir(parents=True)
    (pkg / "weights.bin").write_bytes(b"not a real package")
    h, w = meta["input"]["shape"][2:]
    meta.update(target="coreml", format="coreml_mlpackage")
    meta["input"].update(layout="image (HWC pixels)", dtype="uint8", kind="image", height=h, width=w, range=[0, 255])
    meta["artifact"] = {"file": "model.mlpackage", "size_bytes": 18, "companions": [],
                        "sha256": sha256_path(dst / "model.mlpackage")}
    (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_coreml_needs_macos(exported, tmp_path, capsys):
    folder = _fake_coreml(_artifact(exported, "onnx-fp32"), tmp_path / "coreml-fp32")
    art = load_artifact(folder)
    verify_sha256(art)  # a package folder hashes as the project hashes it
    assert art.input.shape == (1, 128, 96, 3) and art.input.image
    with pytest.raises(rt_errors.RuntimeUnavailable, match="needs macOS"):
        open_adapter(art)
    assert "needs macOS" in runner_exit2(capsys, [str(folder), "--out", str(tmp_path / "r.json")])


# --- pieces ------------------------------------------------------------------------------------

def test_metadata_checks_name_the_field(exported, tmp_path):
    folder = tmp_path / "a"
    shutil.copytree(_artifact(exported, "onnx-fp32"), folder)
    meta = json.loads((folder / "metadata.json").read_text())
    for change, needle in (({"schema_version": 99}, "schema_version"), ({"target": "tensorrt"}, "'target'"),
                           ({"input": {"name": "input"}}, "input.shape"), ({"output": None}, "'output'")):
        (folder / "metadata.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(rt_errors.ArtifactError, match=needle):
            load_artifact(folder)
    (folder / "metadata.json").write_text(json.dumps(meta))
    (folder / "model.onnx").unlink()
    with pytest.raises(rt_errors.ArtifactError, match="missing"):
        load_artifact(folder)


def test_validate_result_names_what_is_wrong(torch_free_run):
    good = torch_free_run[1]["onnx-fp32"]
    for broken, needle in (({k: v for k, v in good.items() if k != "peak_rss_mb"}, "peak_rss_mb"),
                           ({**good, "load_ms": "fast"}, "load_ms"),
                           ({**good, "latency": {**good["latency"], "p99_ms": -1.0}}, "p99_ms"),
                           ({**good, "latency": {**good["latency"], "p50_ms": good["latency"]["max_ms"] + 1}},
                            "p50_ms"),
                           ({**good, "schema_version": 2}, "schema_version"),
                           ({**good, "inputs": "camera"}, "inputs")):
        with pytest.raises(rt_errors.ArtifactError, match=needle):
            validate_result(broken)
    with pytest.raises(rt_errors.UsageError):
        validate_result([good])


def test_input_forms_follow_the_metadata(exported):
    fp = load_artifact(_artifact(exported, "onnx-fp32"))
    x = random_input(fp, seed=3)
    assert x.dtype == np.float32 and x.shape == (1, 3, 128, 96) and 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(x, random_input(fp, seed=3))
    if "tflite-fp32" in exported:
        t = random_input(load_artifact(exported["tflite-fp32"]), seed=3)
        np.testing.assert_array_equal(t, x.transpose(0, 2, 3, 1))  # same pixels, NHWC
    big = np.zeros((256, 192, 3), np.uint8)
    assert image_to_input(big, fp).shape == (1, 3, 128, 96)
    with pytest.raises(rt_errors.UsageError):
        image_to_input(big.astype(np.float32), fp)


def test_latency_stats():
    s = latency_stats([float(v) for v in range(1, 101)])
    assert s["min_ms"] == 1 and s["max_ms"] == 100 and s["p50_ms"] == pytest.approx(50.5)
    assert s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["trimmed_mean_ms"] == pytest.approx(50.5)  # 11..90
    assert latency_stats([1.0, 1.0, 1.0, 100.0] * 5)["trimmed_mean_ms"] < latency_stats([1.0, 1.0, 1.0, 100.0] * 5)["mean_ms"]


def test_litert_quantized_io_helpers():
    from hrnet_edge_runtime.adapters.litert import dequantize, quantize

    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    q = quantize(np.array([0.0, 1.0, 100.0, -100.0], np.float32), detail)
    assert q.dtype == np.int8 and q.tolist() == [-3, -1, 127, -128]
    np.testing.assert_allclose(dequantize(q, detail), [0.0, 1.0, 65.0, -62.5])
    raw = np.array([1, 2], np.uint8)  # integer output without a scale: not quantized
    assert dequantize(raw, {"dtype": np.uint8, "quantization": (0.0, 0)}).tolist() == [1.0, 2.0]


# --- a finished run's artifacts, when this checkout has one ------------------------------------

@pytest.mark.skipif(not EXISTING.is_dir(), reason="no runs/default in this checkout")
@pytest.mark.parametrize("name", EXISTING_COPIES)
def test_existing_run_artifacts_device_path_matches_the_host_checks(name, tmp_path, pictures):
    from converters.registry import get_target

    src = EXISTING / name
    if not (src / "metadata.json").is_file():
        pytest.skip(f"{src} is not there")
    folder = shutil.copytree(src, tmp_path / name)
    art = load_artifact(folder)
    verify_sha256(art)
    target = get_target(art.target)
    ok, reason = target.runnable()
    if not ok:
        pytest.skip(reason)
    runner = target.load(folder, threads=2)
    with open_adapter(art, threads=2) as adapter:
        for rgb in pictures[:3]:
            y = adapter.run(image_to_input(rgb, art))
            if art.output["layout"] == "NHWC":
                y = y.transpose(0, 3, 1, 2)
            pixels = resize_rgb(rgb, art.input.height, art.input.width)
            ref = runner(pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
            np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
