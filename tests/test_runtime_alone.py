"""The device runner installed alone, as on a device: ``.venv-runtime`` holds
``./apps/runtime[onnxruntime,openvino,litert,metrics]`` (a copy, not editable) at the pinned
versions and nothing of hrnet-edge or torch (scripts/setup_apps.sh makes it; the README's
test command runs that). It runs the tiny pose pipeline run's ONNX, OpenVINO and LiteRT
artifacts on the run's validation pictures with their COCO labels (OKS AP beside the
host check's), and ``hrnet-edge report --add`` merges the
three results and the official tools' reports on the same artifacts (OpenVINO
``benchmark_app -json_stats``, ``litert-benchmark --result_json``) into a copy of the run.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_for_apps
from hrnet_edge.cli import main
from hrnet_edge.io import read_json
from hrnet_edge_runtime.result import validate_result

pytestmark = pytest.mark.export

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-runtime"
BIN = VENV / "bin"
ARTIFACTS = ("onnx-fp32", "openvino-int8", "tflite-int8")


@pytest.fixture(scope="module")
def alone() -> Path:
    if not (BIN / "hrnet-edge-run").exists():
        need_for_apps(False,
                      ".venv-runtime is missing: run `bash scripts/setup_apps.sh` (the README's test command does)")
    return BIN


def test_the_runner_venv_has_no_torch_and_no_hrnet_edge(alone):
    for mod in ("torch", "hrnet_edge", "converters", "quantization"):
        done = subprocess.run([str(alone / "python"), "-c", f"import {mod}"], capture_output=True, text=True,
                              cwd=VENV, timeout=120)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, mod
    done = subprocess.run([str(alone / "python"), "-c",
                           "import hrnet_edge_runtime, onnxruntime, openvino, ai_edge_litert; "
                           "print(hrnet_edge_runtime.__file__)"],
                          capture_output=True, text=True, cwd=VENV, timeout=120)
    assert done.returncode == 0, done.stderr
    # installed as a copy into the venv, not pointing back at the checkout
    assert str(VENV) in done.stdout and "apps/runtime/hrnet_edge_runtime" not in done.stdout


@pytest.fixture(scope="module")
def device_results(alone, pose_pipeline_run, tmp_path_factory):
    run = pose_pipeline_run[0]
    images = run / "data" / "images" / "val2017"
    labels = run / "data" / "annotations" / "person_keypoints_val2017.json"
    assert any(images.iterdir()) and labels.is_file(), images
    out = tmp_path_factory.mktemp("alone")
    results = {}
    for name in ARTIFACTS:
        art = run / "exports" / name
        dest = out / f"{name}.json"
        # From a folder outside the checkout, as on a device.
        done = subprocess.run([str(alone / "hrnet-edge-run"), str(art), "--out", str(dest), "--warmup", "2",
                               "--iterations", "10", "--images", str(images), "--labels", str(labels), "--threads", "1",
                               "--label", "runner-alone"],
                              capture_output=True, text=True, cwd=out, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        results[name] = dest
    return run, out, results


def test_the_alone_runner_times_onnx_openvino_and_litert(device_results):
    run, _, results = device_results
    for name, path in results.items():
        doc = json.loads(path.read_text())
        validate_result(doc)
        meta = read_json(run / "exports" / name / "metadata.json")
        assert (doc["target"], doc["precision"], doc["task"]) == (meta["target"], meta["precision"], "pose")
        assert doc["sha256_verified"] is True and doc["label"] == "runner-alone"
        assert doc["inputs"].startswith("images:")
        lat = doc["latency"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["iterations"] == 10
        assert "torch" not in json.dumps(doc["runtime"]).lower()
        # The task metric on the labelled folder, beside the host check of the same artifact
        # (the runner crops with numpy, the host with OpenCV: a grey level or two apart).
        host = read_json(run / "checks" / f"{name}.json")
        assert host["artifact_sha256"] == doc["artifact_sha256"]
        assert doc["metric_name"] == host["metric_name"] == "AP"
        assert doc["metric"]["num_instances"] == host["metric"]["num_instances"] > 0
        assert abs(doc["metric"]["AP"] - host["metric"]["AP"]) <= 0.02, (name, doc["metric"], host["metric"])


def test_report_add_merges_the_alone_runner_and_the_official_tools(device_results, tmp_path):
    run, out, results = device_results
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    tools = Path(sys.executable).parent  # the wheels' console scripts, as a device installs them
    rep = tmp_path / "ov"
    rep.mkdir()  # benchmark_app writes into an existing folder
    _call(tools / "benchmark_app", "-m", str(copy / "exports" / "openvino-int8" / "model.xml"), "-d", "CPU",
          "-niter", "10", "-hint", "latency", "-report_type", "no_counters", "-json_stats", "-report_folder", str(rep))
    lr = tmp_path / "litert.json"
    _call(tools / "litert-benchmark", "--model", str(copy / "exports" / "tflite-int8" / "model.tflite"),
          "--num_runs", "10", "--warmup_runs", "2", "--num_threads", "1", "--result_json", str(lr))
    assert main(["report", "--run", str(copy), "--no-progress", "--add", *map(str, results.values())]) == 0
    assert main(["report", "--run", str(copy), "--no-progress", "--add", str(rep / "benchmark_report.json"),
                 "--label", "ov-benchmark-app"]) == 0
    assert main(["report", "--run", str(copy), "--no-progress", "--add", str(lr), "--label", "litert-tool"]) == 0
    rows = read_json(copy / "report.json")["device_rows"]
    got = {(r["label"], r["target"], r["precision"]) for r in rows}
    want = {("runner-alone", *name.split("-")) for name in ARTIFACTS}
    want |= {("ov-benchmark-app", "openvino", "int8"), ("litert-tool", "tflite", "int8")}
    assert got == want
    for r in rows:
        assert r["host_check"]["same_artifact"] is True and r["latency"]["p50_ms"] > 0, r
    md = (copy / "report.md").read_text()
    for label, target, precision in want:
        assert f"| {label} | {target} | {precision} |" in md


def _call(*argv) -> None:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv[0]}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
