"""The reference benchmark: its arithmetic on hand-computed rows, the measured GEMM
peaks, a small end-to-end run (ONNX Runtime, project and by hand, on real photo
crops) and the command line's handling of bad input. Nothing here asserts a speed:
the figures belong to whichever CPU runs them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hrnet_edge.bench import BenchOptions, prepare_model, run_bench
from hrnet_edge.bench.peak import cpu_facts, measure_peaks
from hrnet_edge.bench.table import derive, markdown, ordered
from hrnet_edge.cli import main
from hrnet_edge.data.natural import natural_images


def _row(runtime, precision, source, p50, **kw):
    return {"runtime": runtime, "precision": precision, "source": source, "p50_ms": p50, "p90_ms": p50 * 1.1, **kw}


def test_derive_by_hand():
    peaks = {"fp32": {"gflops": 200.0}, "bf16": {"gflops": 400.0}, "int8": {"gflops": 800.0}}
    rows = [_row("pytorch", "fp32", "eager", 20.0),
            _row("onnxruntime", "fp32", "project", 5.0),
            _row("onnxruntime", "int8", "project", 2.0),
            _row("onnxruntime", "fp32", "by hand", 4.0),
            _row("onnxruntime", "int8", "by hand", 10.0),
            _row("openvino", "default", "by hand", 2.5, ran="bf16"),
            _row("openvino", "bf16", "project", 2.0, ran="bf16"),
            _row("litert", "int8", "project", 1.0, form="broadcast"),
            {"runtime": "litert", "precision": "fp32", "source": "project", "error": "RuntimeError: x"}]
    out = {(r["runtime"], r["precision"], r["source"]): r for r in derive(rows, peaks, gflop=1.0)}
    ort = out[("onnxruntime", "int8", "project")]
    assert ort["gflops_per_s"] == 500.0 and ort["peak_kind"] == "int8" and ort["pct_of_peak"] == 62.5
    assert ort["speedup_vs_eager"] == 10.0
    assert ort["int8_speedup_vs_fp32"] == 2.5  # against the project's own fp32 row
    assert ort["speedup_vs_by_hand"] == 5.0  # by-hand int8 10 ms / 2 ms
    assert out[("onnxruntime", "int8", "by hand")]["int8_speedup_vs_fp32"] == 0.4
    assert out[("onnxruntime", "fp32", "project")]["speedup_vs_by_hand"] == 0.8
    ov = out[("openvino", "bf16", "project")]
    # OpenVINO's by-hand default ran bf16, so it is the project's bf16 row's baseline
    assert ov["peak_kind"] == "bf16" and ov["pct_of_peak"] == 125.0 and ov["speedup_vs_by_hand"] == 1.25
    # a row without its fp32 partner (different form) gets no INT8 ratio; failures none at all
    assert "int8_speedup_vs_fp32" not in out[("litert", "int8", "project")]
    assert "speedup_vs_eager" not in out[("litert", "fp32", "project")]


def test_markdown_orders_rows_and_shows_failures():
    rows = [_row("litert", "int8", "by hand", 3.0), _row("litert", "int8", "project", 2.0),
            _row("pytorch", "fp32", "eager", 9.0), _row("litert", "fp32", "project", 4.0),
            {"runtime": "executorch", "precision": "int8", "source": "project", "error": "ExportError: a | b"}]
    assert [(r["runtime"], r["precision"], r["source"]) for r in ordered(rows)][:4] == [
        ("pytorch", "fp32", "eager"), ("litert", "fp32", "project"), ("litert", "int8", "project"),
        ("litert", "int8", "by hand")]
    result = {"model": "m", "input_size": [64, 64], "cpu": {"name": "CPU X", "logical_cpus": 2, "features": []},
              "peaks": {"fp32": {"gflops": 1.0}}, "threads": 2, "iterations": 5, "warmup": 1, "gflop": 1.0,
              "macs": 5e8, "rows": derive(rows, {"fp32": {"gflops": 100.0}}, 1.0)}
    text = markdown(result)
    assert "CPU X" in text and "failed: ExportError: a / b" in text  # a pipe would break the table
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len({ln.count("|") for ln in table}) == 1, table  # every row has every column


def test_peaks_are_measured():
    peaks = measure_peaks(threads=1, size=256)
    assert set(peaks) == {"fp32", "bf16", "int8"}
    assert peaks["fp32"]["gflops"] > 0 and peaks["bf16"]["gflops"] > 0
    assert peaks["int8"]["gflops"] is None or peaks["int8"]["gflops"] > 0
    facts = cpu_facts()
    assert facts["name"] and facts["logical_cpus"] >= 1
    assert set(facts["features"]) <= {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                      "amx_tile", "amx_bf16", "amx_int8"}


def test_by_hand_exports_run_the_same_model(tmp_path):
    """The by-hand rows time the model the project exports: same outputs on photo crops."""
    from hrnet_edge.bench import byhand

    size = (128, 96)
    model = prepare_model("hrnet_w8_pose", size, natural_images(16, size, seed=3))
    x = natural_images(2, size, seed=5)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    example = torch.from_numpy(x[:1])
    fn, _ = byhand.onnx_fp32(model, example, tmp_path, 1)
    out = np.concatenate([fn(x[i:i + 1]) for i in range(2)])
    assert np.abs(out - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    fn, facts = byhand.openvino_default(model, example, tmp_path, 1)
    assert facts["ran"] in ("f32", "bf16")
    out = np.concatenate([fn(x[i:i + 1]) for i in range(2)])
    # bf16 (the plugin's default on CPUs with BF16 units): the project's bf16 parity limit
    tol = 1e-4 if facts["ran"] == "f32" else 0.1
    assert np.abs(out - ref).max() < tol * max(1.0, np.abs(ref).max())


def test_small_run_end_to_end(tmp_path):
    opts = BenchOptions(model="hrnet_w8_pose", input_size=(128, 96), threads=1, warmup=1, iterations=4,
                        targets=("onnx",), calibration_images=8, profile=True)
    result = run_bench(opts, tmp_path)
    rows = {(r["runtime"], r["precision"], r["source"]): r for r in result["rows"]}
    assert set(rows) == {("pytorch", "fp32", "eager"), ("onnxruntime", "fp32", "project"),
                         ("onnxruntime", "int8", "project"), ("onnxruntime", "fp32", "by hand"),
                         ("onnxruntime", "int8", "by hand")}
    for r in rows.values():
        assert "error" not in r, r
        assert r["iterations"] == 4 and 0 < r["p50_ms"] <= r["p90_ms"]
        assert r["gflops_per_s"] == pytest.approx(result["gflop"] / (r["p50_ms"] / 1e3), rel=1e-2)
    assert rows[("pytorch", "fp32", "eager")]["speedup_vs_eager"] == 1.0
    assert "int8_speedup_vs_fp32" in rows[("onnxruntime", "int8", "project")]
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["schema"] == "hrnet-edge.bench/1" and saved["cpu"]["name"] and saved["peaks"]["fp32"]["gflops"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    md = (tmp_path / "bench.md").read_text()
    assert "| onnxruntime | int8 | by hand |" in md
    # the project's ONNX rows carry a per-op profile; the folded INT8 graph runs QLinearConv
    prof = rows[("onnxruntime", "int8", "project")]["profile"]
    assert any(o["op"] == "QLinearConv" for o in prof["ops"]), prof
    assert "Where the time goes" in md and "QLinearConv" in md
    assert "_profile" not in json.dumps(saved)


@pytest.mark.parametrize("argv, words", [
    (["--model", "hrnet_w8_posee"], "hrnet_w8_pose"),
    (["--input-size", "100x100"], "multiples of 32"),
    (["--threads", "0"], "threads"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, words):
    assert main(["bench", "--out", str(tmp_path / "b"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "b").exists()  # nothing written for a refused command


def test_cli_bad_size_syntax(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--input-size", "big"])
    assert exc.value.code == 2 and "256x192" in capsys.readouterr().err


def test_profiles_add_up(tmp_path):
    """Both profilers see the model's convolutions, and the shares cover all the time."""
    import openvino as ov

    from hrnet_edge.bench.profile import onnxruntime_profile, openvino_profile
    from converters.onnx import export_onnx

    size = (128, 96)
    model = prepare_model("hrnet_w8_pose", size, natural_images(8, size, seed=3))
    x = natural_images(1, size, seed=5)
    onnx_path = export_onnx(model, tmp_path / "m.onnx", size)
    xml = tmp_path / "m.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml))
    for prof in (onnxruntime_profile(onnx_path, x, 1, runs=3, top=4), openvino_profile(xml, x, 1, runs=3, top=4)):
        assert prof["runs"] == 3 and prof["profiled_ms_per_inference"] > 0
        assert sum(o["share"] for o in prof["ops"]) == pytest.approx(1.0, abs=0.01)
        assert len(prof["ops"]) <= 5 and "Conv" in " ".join(o["op"] for o in prof["ops"][:2]), prof
