"""``hrnet-edge report --add``: device results read from four formats, matched to a run's
artifacts, stored in ``RUN/devices/`` and shown in report.json, report.md and pareto.png.

The fast tests build a run directory by hand (config, export folders with metadata.json,
check rows); the ``export`` tests export a tiny HRNet to OpenVINO and TFLite with the
project's converters and run the real ``benchmark_app``, ``litert-benchmark`` and
``hrnet-edge-run`` on copies of the artifacts, as a user does on a device.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from converters.check import artifact_files, artifact_hash
from converters.device_results import read_device_file
from converters.report import device_points, plot_pareto
from hrnet_edge.cli import main
from hrnet_edge.io import read_json, sha256_file, write_json
from hrnet_edge.runconfig import load_run_config
from hrnet_edge.runs import RunDir


# ------------------------------------------------------------------ a run by hand


def _check_row(run: RunDir, target: str, precision: str, p50: float, ap: float) -> dict:
    art_dir = run.export_dir(target, precision)
    row = {"target": target, "precision": precision, "task": "pose", "metric_name": "AP",
           "artifact": str(artifact_files(art_dir)[0].relative_to(run.root)),
           "artifact_sha256": artifact_hash(art_dir), "reference": "fp32", "status": "passed", "reason": "",
           "metric": {"AP": ap}, "latency": {"p50_ms": p50, "p90_ms": p50 * 1.2, "iterations": 50},
           "peak_rss_mb": 300.0}
    write_json(run.check_path(target, precision), row)
    return row


def _fake_artifact(run: RunDir, target: str, precision: str, files: dict[str, bytes], p50: float, ap: float):
    art_dir = run.export_dir(target, precision)
    art_dir.mkdir(parents=True)
    for name, data in files.items():
        (art_dir / name).write_bytes(data)
    main_file, *companions = artifact_files(art_dir)
    write_json(art_dir / "metadata.json", {
        "target": target, "precision": precision, "task": "pose",
        "artifact": {"file": main_file.name, "sha256": sha256_file(main_file),
                     "companions": [{"file": c.name, "sha256": sha256_file(c)} for c in companions]}})
    return _check_row(run, target, precision, p50, ap)


def _new_run(root: Path) -> RunDir:
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "config.json", load_run_config(None).to_dict())  # pose, hrnet_w8_pose
    return RunDir(root)


@pytest.fixture
def run(tmp_path):
    run = _new_run(tmp_path / "run")
    _fake_artifact(run, "onnx", "int8", {"model.onnx": b"onnx int8 bytes"}, p50=1.42, ap=0.7433)
    _fake_artifact(run, "openvino", "int8", {"model.xml": b"<net/>", "model.bin": b"weights"}, p50=0.81, ap=0.7437)
    _fake_artifact(run, "executorch", "int8", {"model.pte": b"pte bytes"}, p50=0.69, ap=0.7390)
    assert main(["report", "--run", str(run.root)]) == 0  # the report as it is before any --add
    return run


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _md_row(run: RunDir, start: str) -> list[str]:
    lines = [ln for ln in run.report_md.read_text().splitlines() if ln.startswith(start)]
    assert len(lines) == 1, (start, run.report_md.read_text())
    return [c.strip() for c in lines[0].strip("|").split("|")]


def _device_rows(run: RunDir) -> list[dict]:
    return read_json(run.report_json)["device_rows"]


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def device_result(sha: str, target="onnx", precision="int8", **changes) -> dict:
    """A result in the hrnet-edge-run schema, version 1 (the export test runs the real tool)."""
    d = {"schema": "hrnet-edge-device-result", "schema_version": 1, "source": "hrnet-edge-run",
         "label": "pixel-8", "target": target, "precision": precision, "task": "pose",
         "artifact": f"{target}-{precision}/model.onnx", "artifact_sha256": sha, "sha256_verified": True,
         "size_bytes": 15, "load_ms": 120.0, "first_inference_ms": 9.5,
         "latency": {"p50_ms": 3.21, "p90_ms": 3.9, "p95_ms": 4.1, "p99_ms": 4.8, "mean_ms": 3.5,
                     "trimmed_mean_ms": 3.3, "min_ms": 3.0, "max_ms": 5.0, "std_ms": 0.3,
                     "iterations": 100, "warmup": 10, "threads": 4},
         "rss_before_load_mb": 150.0, "peak_rss_mb": 210.4,
         "runtime": {"name": "onnxruntime", "version": "1.22.0", "device": "CPU"},
         "host": {"cpu": "Tensor G3", "arch": "aarch64", "os": "Android 14"},
         "profile": {"available": False}, "inputs": "random", "created": "2026-11-20T10:00:00+00:00"}
    d.update(changes)
    return d


# Written from the ExecuTorch Android benchmark app's source (pytorch/executorch,
# extension/benchmark/android/benchmark: BenchmarkMetric and ModelRunner write a Gson list
# of {benchmarkModel {name, backend, quantization}, metric, actualValue, targetValue,
# deviceInfo {device = Build.BRAND, arch = Build.MODEL, os, totalMem, availMem}} to
# files/benchmark_results.json); the app runs on Android only, so this is not a real output.
# totalMem/availMem come from an ActivityManager.MemoryInfo the app never fills: 0.
def executorch_results(load_status: float = 0.0) -> list[dict]:
    model = {"name": "hrnet_w8_pose", "backend": "xnnpack", "quantization": "int8"}  # hrnet_w8_pose_xnnpack_int8.pte
    info = {"device": "samsung", "arch": "SM-S921B", "os": "Android 14", "totalMem": 0, "availMem": 0}
    metrics = [("avg_inference_latency(ms)", 4.87), ("trimmean_inference_latency(ms)", 4.52),
               ("model_load_time(ms)", 85.3), ("load_status", load_status), ("ram_pss_usage(mb)", 12.0)]
    return [{"benchmarkModel": model, "metric": m, "actualValue": v, "targetValue": 0.0, "deviceInfo": info}
            for m, v in metrics]


# As the C++ benchmark_app writes -json_stats (samples/cpp/benchmark_app: StatisticsVariant
# json names, numbers rather than the Python tool's strings), e.g. on an Intel NPU machine.
def benchmark_app_cpp(model: str, percentile: int = 50) -> dict:
    return {"cmd_options": {"m": model, "d": "NPU", "hint": "latency", "json_stats": "true"},
            "configuration_setup": {"benchmark_mode": "inference only", "topology": "Model0", "target_device": "NPU",
                                    "api": "sync", "precision": "f32", "batch_size": 1, "iterations_num": 200,
                                    "nireq": 1, "duration": 0},
            "execution_results": {"read_model_time": 12.5, "load_model_time": 640.25, "first_inference_time": 3.4,
                                  "execution_time": 310.0, "iterations_num": 200, "latency_median": 1.37,
                                  "percentile_boundary": percentile, "latency_avg": 1.52, "latency_min": 1.21,
                                  "latency_max": 4.05, "throughput": 645.2}}


# ------------------------------------------------------------------------ fast tests


def test_hrnet_edge_run_result_is_matched_by_sha256(run, tmp_path, capsys):
    sha = read_json(run.check_path("onnx", "int8"))["artifact_sha256"]
    f = _write(tmp_path / "pixel.json", device_result(sha))
    assert main(["report", "--run", str(run.root), "--add", str(f)]) == 0
    stored = read_json(run.root / "devices" / "pixel-8-onnx-int8-hrnet-edge-run.json")
    assert stored["match"] == "sha256" and stored["artifact_sha256"] == sha and stored["file"] == str(f.resolve())
    assert stored["latency"]["p50_ms"] == 3.21 and stored["latency"]["p99_ms"] == 4.8
    [row] = _device_rows(run)
    assert (row["label"], row["target"], row["precision"], row["source"]) == ("pixel-8", "onnx", "int8",
                                                                               "hrnet-edge-run")
    assert row["load_ms"] == 120.0 and row["peak_rss_mb"] == 210.4
    assert row["host_check"] == {"status": "passed", "same_artifact": True, "p50_ms": 1.42, "AP": 0.7433}
    md = run.report_md.read_text()
    assert "## Measured on devices" in md
    assert _md_row(run, "| pixel-8 |") == ["pixel-8", "onnx", "int8", "hrnet-edge-run", "3.21", "3.50", "120.0",
                                           "210", "onnxruntime 1.22.0 (CPU)", "1.42"]
    assert "pixel-8 onnx-int8 (hrnet-edge-run, matched by sha256)" in capsys.readouterr().out


def test_adding_the_same_result_again_replaces_its_row(run, tmp_path):
    sha = read_json(run.check_path("onnx", "int8"))["artifact_sha256"]
    f = _write(tmp_path / "pixel.json", device_result(sha))
    for _ in range(2):
        assert main(["report", "--run", str(run.root), "--add", str(f)]) == 0
    assert len(_device_rows(run)) == 1 and len(list((run.root / "devices").iterdir())) == 1
    again = device_result(sha)
    again["latency"]["p50_ms"] = 2.75  # a second measurement on the same phone
    assert main(["report", "--run", str(run.root), "--add", str(_write(f, again))]) == 0
    [row] = _device_rows(run)
    assert row["latency"]["p50_ms"] == 2.75
    assert _md_row(run, "| pixel-8 |")[4] == "2.75" and "| 3.21 |" not in run.report_md.read_text()
    # another label is another device: a second row
    assert main(["report", "--run", str(run.root), "--add", str(f), "--label", "pixel-9"]) == 0
    assert sorted(r["label"] for r in _device_rows(run)) == ["pixel-8", "pixel-9"]


def test_executorch_app_results_need_the_precision(run, tmp_path, capsys):
    f = _write(tmp_path / "benchmark_results.json", executorch_results())
    before = _snapshot(run.root)
    assert main(["report", "--run", str(run.root), "--add", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(f) in err and "--target and --precision" in err
    assert _snapshot(run.root) == before
    # the app runs .pte files only: the target follows from the tool
    assert main(["report", "--run", str(run.root), "--add", str(f), "--precision", "int8"]) == 0
    [row] = _device_rows(run)
    assert row["match"] == "options" and (row["target"], row["precision"]) == ("executorch", "int8")
    assert row["label"] == "samsung SM-S921B" and row["load_ms"] == 85.3 and row["pss_delta_mb"] == 12.0
    assert row["latency"] == {"mean_ms": 4.87, "trimmed_mean_ms": 4.52}  # no median: none invented
    assert "peak_rss_mb" not in row and "total_mem_bytes" not in row["host"]
    assert row["runtime"]["backend"] == "xnnpack"
    assert _md_row(run, "| samsung SM-S921B |") == ["samsung SM-S921B", "executorch", "int8", "executorch-minibench",
                                                    "-", "4.87", "85.3", "PSS +12", "executorch", "0.69"]
    # plotted at its trimmed mean, at the host check's AP of the same artifact
    assert device_points(_device_rows(run), "AP") == [(4.52, 0.7390, "executorch",
                                                        "samsung SM-S921B int8 (trimmed mean)")]


def test_cpp_benchmark_app_report_is_matched_by_its_model_path(run, tmp_path):
    f = _write(tmp_path / "benchmark_report.json",
               benchmark_app_cpp("C:\\Users\\me\\hrnet\\openvino-int8\\model.xml"))
    assert main(["report", "--run", str(run.root), "--add", str(f), "--label", "core-ultra"]) == 0
    [row] = _device_rows(run)
    assert row["match"] == "path" and (row["target"], row["precision"]) == ("openvino", "int8")
    assert row["latency"] == {"p50_ms": 1.37, "mean_ms": 1.52, "min_ms": 1.21, "max_ms": 4.05, "iterations": 200}
    assert row["load_ms"] == 12.5 + 640.25 and row["first_inference_ms"] == 3.4 and row["throughput_fps"] == 645.2
    assert row["runtime"]["device"] == "NPU"
    assert _md_row(run, "| core-ultra |")[4:] == ["1.37", "1.52", "652.8", "-", "openvino (NPU)", "0.81"]
    # at another percentile the value is that percentile, never called the median
    row, _ = read_device_file(_write(tmp_path / "p90.json", benchmark_app_cpp("x/onnx-int8/model.onnx", 90)))
    assert row["latency"]["p90_ms"] == 1.37 and "p50_ms" not in row["latency"]


def test_unmatched_only_with_force(run, tmp_path, capsys):
    f = _write(tmp_path / "old.json", device_result("ab" * 32))
    before = _snapshot(run.root)
    assert main(["report", "--run", str(run.root), "--add", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(f) in err and "executorch-int8, onnx-int8, openvino-int8" in err
    assert _snapshot(run.root) == before
    assert main(["report", "--run", str(run.root), "--add", str(f), "--force"]) == 0
    [row] = _device_rows(run)
    assert row["match"] == "unmatched" and "host_check" not in row
    assert _md_row(run, "| pixel-8 |")[2] == "int8 (unmatched)" and _md_row(run, "| pixel-8 |")[-1] == "-"


LITERT_FIELDS = {"model": "/data/local/tmp/model.tflite", "model_size_mb": 0.46, "accelerators": ["CPU"],
                 "signature": "serving_default", "fully_accelerated": False, "num_threads": 4,
                 "latency": {"init_ms": 5.06, "warmup_first_ms": 1.25, "warmup_avg_ms": 4.67, "num_warmup_runs": 3,
                             "avg_ms": 1.62, "min_ms": 0.44, "max_ms": 9.12, "median_ms": 0.61, "std_ms": 2.3,
                             "p5_ms": 0.44, "p95_ms": 7.21, "num_runs": 30},
                 "throughput_mb_s": 86.71}  # litert-benchmark 2.3.0's fields (the export test runs it)


@pytest.mark.parametrize("content, needle", [
    ({"results": [1, 2]}, "benchmark_app -json_stats benchmark_report.json, LiteRT litert-benchmark"),
    ("[INFO] Count: 50 iterations", "cannot read it as JSON"),
    ("v2", "schema_version 2 is not one this version of hrnet-edge reads (known: 1)"),
    ("no-artifact", "known: executorch-int8, onnx-int8, openvino-int8"),
    (LITERT_FIELDS, "give --target and --precision"),
    ({**LITERT_FIELDS, "model": "phone/tflite-int8/model.tflite"}, "tflite-int8 (from its model path) is no artifact"),
    (executorch_results(load_status=20.0), "could not load the model (load_status 20.0)"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_the_run_as_it_was(run, tmp_path, capsys, content, needle):
    sha = read_json(run.check_path("onnx", "int8"))["artifact_sha256"]
    good = _write(tmp_path / "good.json", device_result(sha))
    if content == "v2":
        content = device_result(sha, schema_version=2)
    elif content == "no-artifact":
        content = device_result("0" * 64)
    bad = tmp_path / "bad.json"
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    before = _snapshot(run.root)
    # a good file first: nothing of it is written either
    assert main(["report", "--run", str(run.root), "--add", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hrnet-edge report: error: ") and "\n" not in err
    assert str(bad) in err and needle in err, err
    assert _snapshot(run.root) == before and not (run.root / "devices").exists()


def test_report_without_add_is_as_before(run, capsys):
    md = run.report_md.read_text()
    assert "Measured on devices" not in md and _device_rows(run) == []
    assert main(["report", "--run", str(run.root), "--label", "x"]) == 2
    assert "--label: only with --add" in capsys.readouterr().err


def test_device_points_are_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"target": "onnx", "precision": "int8", "status": "passed", "latency": {"p50_ms": 1.4},
             "metric": {"AP": 0.74}}]
    device = {"label": "pixel-8", "target": "onnx", "precision": "int8", "latency": {"p50_ms": 3.2, "mean_ms": 3.5},
              "host_check": {"AP": 0.74}}
    points = device_points([device, {**device, "host_check": {}}], "AP")
    assert points == [(3.2, 0.74, "onnx", "pixel-8 int8")]  # no host metric: not plotted
    plot_pareto(tmp_path / "a.png", rows, "AP", "OKS AP")
    plot_pareto(tmp_path / "b.png", rows, "AP", "OKS AP", devices=points)
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()


# ------------------------------------------------------- real tools on real artifacts


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def _call(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A run with a tiny HRNet exported to OpenVINO and TFLite fp32 (and check rows), and
    the tools' real outputs on copies of those artifacts in a "device" folder."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed (extra 'tflite')")
    import torch

    from converters.base import ExportJob
    from converters.metadata import base_metadata
    from converters.onnx import export_onnx
    from converters.registry import get_target
    from hrnet_edge import create_model

    root = tmp_path_factory.mktemp("devices")
    run = _new_run(root / "run")
    torch.manual_seed(0)
    model = create_model("hrnet_w8_pose", input_size=(32, 32), width=4, stem_channels=8, stage1_blocks=1,
                         stage1_planes=4, stage_modules=[1, 1, 1], stage_blocks=[1, 1, 1], head_channels=8).eval()
    meta = base_metadata(model, {}, None)
    get_target("openvino").export(ExportJob(model=model, precision="fp32", out_dir=run.export_dir("openvino", "fp32"),
                                            metadata=meta))
    onnx_path = export_onnx(model, root / "fp32.onnx", (32, 32))
    get_target("tflite").export(ExportJob(model=model, precision="fp32", out_dir=run.export_dir("tflite", "fp32"),
                                          metadata=meta, onnx_path=onnx_path))
    checks = {"openvino": _check_row(run, "openvino", "fp32", p50=0.31, ap=0.5021),
              "tflite": _check_row(run, "tflite", "fp32", p50=0.27, ap=0.5017)}
    assert main(["report", "--run", str(run.root)]) == 0

    dev = root / "device"  # the folders as a user copies them to a device
    for key in ("openvino-fp32", "tflite-fp32"):
        shutil.copytree(run.exports / key, dev / key)
    (dev / "downloads").mkdir()
    shutil.copy(dev / "tflite-fp32" / "model.tflite", dev / "downloads" / "model.tflite")
    out = {}
    (dev / "ov_report").mkdir()  # benchmark_app writes into an existing folder
    _call(_tool("benchmark_app"), "-m", str(dev / "openvino-fp32" / "model.xml"), "-d", "CPU", "-niter", "30",
          "-hint", "latency", "-report_type", "no_counters", "-json_stats", "-report_folder", str(dev / "ov_report"))
    out["benchmark_app"] = dev / "ov_report" / "benchmark_report.json"
    for name, model_file in (("litert", dev / "tflite-fp32" / "model.tflite"),
                             ("litert_downloads", dev / "downloads" / "model.tflite")):
        out[name] = dev / f"{name}.json"
        _call(_tool("litert-benchmark"), "--model", str(model_file), "--num_runs", "20", "--warmup_runs", "2",
              "--num_threads", "2", "--result_json", str(out[name]))
    try:
        runner = _tool("hrnet-edge-run")
    except pytest.skip.Exception:
        runner = None
    if runner:
        out["hrnet-edge-run"] = dev / "result.json"
        _call(runner, str(dev / "openvino-fp32"), "--iterations", "20", "--warmup", "2", "--label", "nuc-13",
              "--out", str(out["hrnet-edge-run"]))
    return run, out, checks


def _fresh(real, tmp_path) -> RunDir:
    """A copy of the module's run, so each test starts without device rows."""
    run, _, _ = real
    shutil.copytree(run.root, tmp_path / "run")
    return RunDir(tmp_path / "run")


@pytest.mark.export
def test_benchmark_app_real_output(real, tmp_path):
    _, out, checks = real
    run = _fresh(real, tmp_path)
    raw = read_json(out["benchmark_app"])["execution_results"]
    assert main(["report", "--run", str(run.root), "--add", str(out["benchmark_app"]), "--label", "nuc"]) == 0
    stored = read_json(run.root / "devices" / "nuc-openvino-fp32-benchmark_app.json")
    assert stored["match"] == "path" and stored["source"] == "benchmark_app"
    lat = stored["latency"]
    assert lat["p50_ms"] == float(raw["latency (ms)"]) and lat["mean_ms"] == float(raw["avg latency"])
    assert lat["min_ms"] == float(raw["min latency"]) and lat["max_ms"] == float(raw["max latency"])
    assert lat["iterations"] == int(raw["total number of iterations"]) == 30
    assert not {"p90_ms", "p95_ms", "p99_ms"} & set(lat)  # benchmark_app reports none of them
    load = float(raw["read model time (ms)"]) + float(raw["compile model time (ms)"])
    assert stored["load_ms"] == pytest.approx(load)
    assert stored["runtime"]["device"] == "CPU" and stored["runtime"]["hint"] == "latency"
    [row] = _device_rows(run)
    assert row["host_check"]["p50_ms"] == checks["openvino"]["latency"]["p50_ms"]
    cells = _md_row(run, "| nuc | openvino | fp32 |")
    assert cells[3:8] == ["benchmark_app", f"{lat['p50_ms']:.2f}", f"{lat['mean_ms']:.2f}",
                          f"{stored['load_ms']:.1f}", "-"]
    assert cells[-1] == "0.31"


@pytest.mark.export
def test_litert_benchmark_real_output(real, tmp_path, capsys):
    _, out, checks = real
    run = _fresh(real, tmp_path)
    raw = read_json(out["litert"])
    assert main(["report", "--run", str(run.root), "--add", str(out["litert"]), "--label", "pixel-8"]) == 0
    [row] = _device_rows(run)
    assert row["match"] == "path" and (row["target"], row["precision"]) == ("tflite", "fp32")
    lat = row["latency"]
    assert lat["p50_ms"] == raw["latency"]["median_ms"] and lat["mean_ms"] == raw["latency"]["avg_ms"]
    assert lat["p95_ms"] == raw["latency"]["p95_ms"] and lat["p5_ms"] == raw["latency"]["p5_ms"]
    assert lat["iterations"] == raw["latency"]["num_runs"] == 20 and lat["threads"] == 2
    assert not {"p90_ms", "p99_ms"} & set(lat)
    assert row["load_ms"] == raw["latency"]["init_ms"] and row["runtime"]["accelerators"] == raw["accelerators"]
    assert row["host_check"] == {"status": "passed", "same_artifact": True, "p50_ms": 0.27, "AP": 0.5017}
    assert _md_row(run, "| pixel-8 | tflite | fp32 |")[4:6] == [f"{lat['p50_ms']:.2f}", f"{lat['mean_ms']:.2f}"]
    assert device_points(_device_rows(run), "AP") == [(lat["p50_ms"], checks["tflite"]["metric"]["AP"], "tflite",
                                                       "pixel-8 fp32")]
    # a model file outside a <target>-<precision> folder needs the options
    before = _snapshot(run.root)
    assert main(["report", "--run", str(run.root), "--add", str(out["litert_downloads"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out["litert_downloads"]) in err and "give --target and --precision" in err
    assert _snapshot(run.root) == before
    assert main(["report", "--run", str(run.root), "--add", str(out["litert_downloads"]),
                 "--target", "tflite", "--precision", "fp32"]) == 0
    assert sorted(r["match"] for r in _device_rows(run)) == ["options", "path"]


@pytest.mark.export
def test_hrnet_edge_run_real_output(real, tmp_path):
    _, out, checks = real
    if "hrnet-edge-run" not in out:
        pytest.skip("hrnet-edge-run is not installed")
    run = _fresh(real, tmp_path)
    raw = read_json(out["hrnet-edge-run"])
    assert raw["artifact_sha256"] == checks["openvino"]["artifact_sha256"]  # .xml then .bin, as the checks
    assert main(["report", "--run", str(run.root), "--add", str(out["hrnet-edge-run"])]) == 0
    [row] = _device_rows(run)
    assert row["match"] == "sha256" and row["label"] == "nuc-13"
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"):
        assert row["latency"][key] == raw["latency"][key]
    assert row["peak_rss_mb"] == raw["peak_rss_mb"] and row["load_ms"] == raw["load_ms"]
    cells = _md_row(run, "| nuc-13 | openvino | fp32 |")
    assert cells[4:8] == [f"{raw['latency']['p50_ms']:.2f}", f"{raw['latency']['mean_ms']:.2f}",
                          f"{raw['load_ms']:.1f}", f"{raw['peak_rss_mb']:.0f}"]
    assert cells[8] == f"openvino {raw['runtime']['version']} (CPU)" and cells[9] == "0.31"
    # the same artifact re-exported on the host since: the host's numbers are not put beside it
    changed = copy.deepcopy(read_json(run.check_path("openvino", "fp32")))
    changed["artifact_sha256"] = "f" * 128
    write_json(run.check_path("openvino", "fp32"), changed)
    assert main(["report", "--run", str(run.root)]) == 0
    assert _device_rows(run)[0]["host_check"] == {"status": "passed", "same_artifact": False}
    assert _md_row(run, "| nuc-13 |")[-1] == "other artifact"
