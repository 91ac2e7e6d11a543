"""``hrnet-edge bundle``: one zip with artifacts, the device runtime, samples and a README,
and ``hrnet-edge-run --samples`` checking an artifact against those samples.

A tiny pose run is built here (config, a few synthetic validation images, a tiny HRNet
exported to ONNX and OpenVINO fp32 with the project's converters), so the tests need no
``runs/`` directory. The bundle is then unpacked and run as on a device, in a process
where torch and the project cannot be imported.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPORT_BLOCKER

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("openvino", reason="openvino is not installed")

from hrnet_edge.cli import main  # noqa: E402
from hrnet_edge.io import write_json  # noqa: E402
from hrnet_edge.runconfig import load_run_config  # noqa: E402
from hrnet_edge.runs import RunDir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "hrnet_edge", "converters", "quantization", "executorch")
ARTIFACTS = ("onnx-fp32", "openvino-fp32")
SAMPLES = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    """A pose run at 32 x 32 with four synthetic validation crops and two real exports."""
    import torch

    from converters.base import ExportJob
    from converters.metadata import base_metadata
    from converters.registry import get_target
    from hrnet_edge import create_model
    from hrnet_edge.runs import open_run

    root = tmp_path_factory.mktemp("bundle") / "run"
    root.mkdir()
    d = load_run_config(None).to_dict()
    d["model_overrides"] = {"input_size": [32, 32]}
    d["data"].update(synthetic_train_images=2, synthetic_val_images=4, synthetic_image_size=[48, 48])
    write_json(root / "config.json", d)
    run, cfg = open_run(root)
    cfg.task.generate(run.data_dir, cfg, reuse_only=False)
    torch.manual_seed(0)
    model = create_model("hrnet_w8_pose", input_size=(32, 32), width=4, stem_channels=8, stage1_blocks=1,
                         stage1_planes=4, stage_modules=[1, 1, 1], stage_blocks=[1, 1, 1], head_channels=8).eval()
    meta = base_metadata(model, {}, None)
    for name in ARTIFACTS:
        target, precision = name.split("-")
        get_target(target).export(ExportJob(model=model, precision=precision,
                                            out_dir=run.export_dir(target, precision), metadata=meta))
    return run


def _bundle(run: RunDir, out: Path, *extra: str, artifacts=ARTIFACTS) -> int:
    return main(["bundle", "--run", str(run.root), "--artifacts", *artifacts, "--samples", str(SAMPLES),
                 "--out", str(out), *extra])


@pytest.fixture(scope="module")
def bundled(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zips") / "bundle.zip"
    assert _bundle(run, out) == 0
    return out


@pytest.fixture(scope="module")
def extracted(bundled, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("device")
    with zipfile.ZipFile(bundled) as zf:
        zf.extractall(dest)
    return dest


def _runtime_files() -> list[str]:
    rt = ROOT / "apps" / "runtime"
    out = []
    for p in rt.rglob("*"):
        rel = p.relative_to(rt)
        if p.is_file() and not any(part in ("__pycache__", "build", "dist") or part.endswith(".egg-info")
                                   for part in rel.parts) and p.suffix not in (".pyc", ".pyo"):
            out.append(f"runtime/{rel.as_posix()}")
    return out


def test_zip_has_exactly_the_expected_entries(bundled, run):
    with zipfile.ZipFile(bundled) as zf:
        names = zf.namelist()
        infos = zf.infolist()
    expected = {"README.md", "samples/manifest.json", *_runtime_files()}
    for name in ARTIFACTS:
        expected |= {f"artifacts/{name}/metadata.json"}
        expected |= {f"artifacts/{name}/{p.name}" for p in (run.exports / name).iterdir()
                     if p.name.startswith("model.")}
        for i in range(SAMPLES):
            expected |= {f"samples/{name}/{i:03d}.{kind}" for kind in ("input.npy", "expected.npy", "decoded.json")}
    expected |= {f"samples/{i:03d}.png" for i in range(SAMPLES)}
    assert set(names) == expected
    assert names == sorted(names)
    assert "artifacts/openvino-fp32/model.bin" in names and "runtime/hrnet_edge_runtime/samples.py" in names
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    with zipfile.ZipFile(bundled) as zf:  # the model bytes are the run's
        assert zf.read("artifacts/onnx-fp32/model.onnx") == (run.exports / "onnx-fp32" / "model.onnx").read_bytes()


def test_samples_are_what_the_artifact_takes_and_gives(extracted, run):
    from hrnet_edge_runtime.adapters import open_adapter
    from hrnet_edge_runtime.metadata import load_artifact
    from PIL import Image

    from hrnet_edge.runs import open_run

    manifest = json.loads((extracted / "samples" / "manifest.json").read_text())
    assert manifest["count"] == SAMPLES and sorted(manifest["artifacts"]) == sorted(ARTIFACTS)
    _, cfg = open_run(run.root)
    _train, val = cfg.task.datasets(run, cfg)
    images = val.stack_images(manifest["indices"])
    art = load_artifact(run.exports / "onnx-fp32")
    with open_adapter(art, threads=1) as adapter:
        for i in range(SAMPLES):
            x = np.load(extracted / "samples" / "onnx-fp32" / f"{i:03d}.input.npy")
            np.testing.assert_array_equal(x, images[i:i + 1])  # the exact float NCHW input
            y = np.load(extracted / "samples" / "onnx-fp32" / f"{i:03d}.expected.npy")
            np.testing.assert_allclose(adapter.run(x), y, rtol=1e-5, atol=1e-6)
            decoded = json.loads((extracted / "samples" / "onnx-fp32" / f"{i:03d}.decoded.json").read_text())
            assert np.asarray(decoded["keypoints"]).shape == (1, 17, 3)
            png = np.asarray(Image.open(extracted / "samples" / f"{i:03d}.png"))
            assert png.shape == (32, 32, 3)
            np.testing.assert_array_equal(png, np.rint(images[i].transpose(1, 2, 0) * 255).astype(np.uint8))


def test_two_bundles_are_byte_identical(run, bundled, tmp_path):
    again = tmp_path / "again.zip"
    assert _bundle(run, again) == 0
    assert again.read_bytes() == bundled.read_bytes()


def test_readme_names_each_artifact_and_runs_nothing_on_devices(extracted, run):
    readme = (extracted / "README.md").read_text()
    for name in ARTIFACTS:
        assert f"artifacts/{name}" in readme
        assert f"hrnet-edge-run artifacts/{name} --samples samples" in readme
    assert "trtexec --onnx=artifacts/onnx-fp32/model.onnx --fp16" in readme  # an ONNX artifact is bundled
    assert "--device NPU" in readme  # an OpenVINO one
    assert "adb push" not in readme and "Core ML" not in readme  # neither TFLite, ExecuTorch nor Core ML
    assert f"hrnet-edge report --run {run.root} --add" in readme
    headings = [line for line in readme.splitlines() if line.startswith("## ") and "Bring" not in line]
    assert headings and all(h.endswith("(not run here)") for h in headings)
    assert "works" not in readme.lower()


_DEVICE = IMPORT_BLOCKER + textwrap.dedent("""
    import runpy
    import hrnet_edge_runtime
    if not hrnet_edge_runtime.__file__.startswith({runtime!r}):
        raise SystemExit(f"not the bundled runtime: {{hrnet_edge_runtime.__file__}}")
    sys.argv = ["hrnet_edge_runtime"] + sys.argv[1:]
    runpy.run_module("hrnet_edge_runtime", run_name="__main__", alter_sys=True)
""")


def _on_device(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m hrnet_edge_runtime ARGV`` from the unpacked bundle's runtime/, with torch
    and the project unimportable."""
    env = {"PYTHONPATH": str(folder / "runtime"), "PATH": "/usr/bin:/bin", "HOME": str(folder)}
    code = _DEVICE.format(blocked=BLOCKED, runtime=str(folder / "runtime"))
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("name", ARTIFACTS)
def test_unpacked_bundle_verifies_without_torch(extracted, name):
    proc = _on_device(extracted, f"artifacts/{name}", "--samples", "samples", "--warmup", "1",
                      "--iterations", "3", "--out", f"r-{name}.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    checked = json.loads((extracted / f"r-{name}.json").read_text())["samples"]
    assert checked["passed"] is True and checked["count"] == SAMPLES
    assert checked["max_abs_over_range"] <= 1e-4 and checked["correlation"] > 0.9999


def test_tampered_expectation_exits_1_naming_the_sample(extracted, tmp_path):
    device = tmp_path / "device"
    shutil.copytree(extracted, device, ignore=shutil.ignore_patterns("r-*.json"))
    path = device / "samples" / "onnx-fp32" / "001.expected.npy"
    y = np.load(path)
    y.flat[0] += float(y.max() - y.min()) * 0.05  # 5 % of the range: far outside fp32's 1e-4
    np.save(path, y)
    proc = _on_device(device, "artifacts/onnx-fp32", "--samples", "samples", "--warmup", "1",
                      "--iterations", "2", "--out", "r.json")
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "sample 001 of onnx-fp32" in err[0], proc.stderr
    checked = json.loads((device / "r.json").read_text())["samples"]
    assert checked["passed"] is False and 0.04 < checked["max_abs_over_range"] < 0.06


def _exit2(capsys, argv_fn) -> str:
    rc = argv_fn()
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_artifact_lists_the_valid_ones(run, tmp_path, capsys):
    out = tmp_path / "b.zip"
    err = _exit2(capsys, lambda: _bundle(run, out, artifacts=("onnx-fp32", "tflite-int8")))
    assert "'tflite-int8'" in err and "onnx-fp32, openvino-fp32" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_tampered_artifact_is_refused(run, tmp_path, capsys):
    bad = RunDir(tmp_path / "run")
    shutil.copytree(run.root, bad.root)
    (bad.exports / "openvino-fp32" / "model.bin").open("ab").write(b"\0")
    out = tmp_path / "b.zip"
    err = _exit2(capsys, lambda: _bundle(bad, out))
    assert "sha256 mismatch" in err and "model.bin" in err
    assert not out.exists()


def test_existing_out_needs_force(run, tmp_path, capsys):
    out = tmp_path / "b.zip"
    out.write_bytes(b"keep me")
    err = _exit2(capsys, lambda: _bundle(run, out, artifacts=("onnx-fp32",)))
    assert "--force" in err and out.read_bytes() == b"keep me"
    assert _bundle(run, out, "--force", artifacts=("onnx-fp32",)) == 0
    with zipfile.ZipFile(out) as zf:
        assert "artifacts/onnx-fp32/model.onnx" in zf.namelist()
    assert [p.name for p in tmp_path.iterdir()] == ["b.zip"]  # no temporary file left behind
