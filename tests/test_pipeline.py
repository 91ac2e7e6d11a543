"""The pipeline end to end on a tiny configuration: every stage, every target.

Slow-ish (exports through every backend), but it is the only test that proves the
stages fit together the way `hrnet-edge pipeline` runs them.
"""
from __future__ import annotations

import json

import pytest

from hrnet_edge.cli import main
from conftest import TINY_POSE as TINY
from hrnet_edge.io import read_json

ALL_ROWS = {("pytorch", "fp32"), ("pytorch", "int8"), ("onnx", "fp32"), ("onnx", "int8"),
            ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "bf16"), ("openvino", "int8"),
            ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"),
            ("executorch", "fp32"), ("executorch", "int8"),
            ("coreml", "fp16"), ("coreml", "fp32"), ("coreml", "int8")}


@pytest.fixture(scope="module")
def pipeline_run(pose_pipeline_run):
    return pose_pipeline_run


@pytest.mark.slow
def test_pipeline_fills_every_row(pipeline_run):
    run, rc = pipeline_run
    report = read_json(run / "report.json")
    qat = read_json(run / "qat" / "metrics.json")
    assert {"fp32", "ptq", "qat"} <= set(qat) and 0 <= qat["qat"]["AP"] <= 1
    rows = {(r["target"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == ALL_ROWS
    # every runnable row passes its thresholds, INT8 included; the command says so
    failed = {k: r["reason"] for k, r in rows.items()
              if r["status"] not in ("passed", "reference", "not_runnable")}
    assert not failed and rc == 0, failed
    assert rows[("pytorch", "fp32")]["metric"]["AP"] > 0.05  # the model learned something
    for key, r in rows.items():
        if r["status"] == "not_runnable":
            assert r["reason"], key  # never a bare status
        if r["status"] == "passed":
            assert r["parity"]["max_abs"] >= 0 and -1 <= r["parity"]["cosine"] <= 1
            assert r["latency"]["iterations"] == 5 and r["latency"]["p50_ms"] > 0
            assert r["size_bytes"] > 0 and 0 <= r["metric"]["AP"] <= 1
            assert r["reference"] == ("qat" if key[1] == "int8" else "fp32")
            # the label-free comparison on real photos is recorded beside it
            nat = r["parity_natural"]
            assert nat["images"] == 16 and 0 <= nat["agreement"] <= 1 and nat["cosine"] > 0.5, nat
    # float runtimes agree with PyTorch to float precision even on an untrained model
    for key in [("onnx", "fp32"), ("openvino", "fp32"), ("tflite", "fp32"), ("executorch", "fp32")]:
        assert rows[key]["status"] == "passed", rows[key]
        assert rows[key]["parity"]["max_abs"] < 1e-3
    # Core ML cannot run on Linux: never "passed", always the structural facts
    for p in ("fp16", "fp32", "int8"):
        assert rows[("coreml", p)]["status"] == "not_runnable"
        assert rows[("coreml", p)]["inspect"]


@pytest.mark.slow
def test_pipeline_writes_the_run_directory(pipeline_run):
    run, _ = pipeline_run
    for rel in ("config.json", "env.json", "metrics.csv", "checkpoints/best.safetensors",
                "checkpoints/last.json", "qat/qat.safetensors", "qat/metrics.json",
                "report.md", "pareto.png", "data/annotations/person_keypoints_val2017.json"):
        assert (run / rel).exists(), rel
    md = (run / "report.md").read_text()
    assert "| openvino | int8 |" in md and "not runnable here" in md
    # what the libraries printed went to the run's log, beside the project's own lines
    log = (run / "logs" / "pipeline.log").read_text()
    assert "[export] onnx-int8" in log and "[check] report" in log
    for meta in run.glob("exports/*/metadata.json"):
        m = json.loads(meta.read_text())
        assert m["task"] == "pose" and m["variant"] == "hrnet_w8_pose"
        assert m["source_model"] == ("qat" if m["precision"] == "int8" else "fp32")
        assert m["output"]["keypoint_names"][0] == "nose" and m["input"]["layout"]
        if m["target"] in ("tflite", "executorch") and m["precision"] == "int8":
            # the INT8 program keeps every activation range QAT learned
            q = m["quantization"]
            assert q["qat_activation_quantizers"] > 50 and q["qat_activation_quantizers_unmatched"] == 0, q
            assert q["activation_ranges_from_qat"] >= q["qat_activation_quantizers"] - 5, q
    # re-running a stage alone reuses the run: nothing is re-trained
    before = (run / "checkpoints/best.safetensors").stat().st_mtime
    assert main(["train", "--run", str(run), "--no-progress"]) == 0
    assert (run / "checkpoints/best.safetensors").stat().st_mtime == before


@pytest.mark.slow
def test_export_without_training_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    from hrnet_edge.runconfig import load_run_config
    from hrnet_edge.runs import init_run

    init_run(tmp_path / "r", load_run_config(cfg))
    assert main(["export", "--run", str(tmp_path / "r")]) == 2
    assert "hrnet-edge train" in capsys.readouterr().err


@pytest.mark.slow
def test_check_redoes_a_row_whose_artifact_changed(pipeline_run, capsys):
    """A saved check row stands only for the artifact it checked: after the artifact is
    replaced (here: truncated, as a failed copy would leave it) `check` checks again and
    says why, instead of reporting the old "passed"."""
    run, _ = pipeline_run
    row_path = run / "checks" / "onnx-fp32.json"
    assert read_json(row_path)["status"] == "passed" and read_json(row_path)["artifact_sha256"]
    model = run / "exports" / "onnx-fp32" / "model.onnx"
    original = model.read_bytes()
    try:
        model.write_bytes(original[: len(original) // 2])
        main(["check", "--run", str(run)])
        out = capsys.readouterr().out
        # the artifact is compared with the sha256 in its metadata.json first: a failed
        # row at once, without running it
        assert "onnx-fp32: failed (artifact integrity: model.onnx does not match the sha256" in out
        assert read_json(row_path)["status"] == "failed"
        # untouched artifacts keep their rows
        assert "openvino-fp32: the artifact changed" not in out
    finally:
        model.write_bytes(original)
    main(["check", "--run", str(run)])  # the restored artifact is checked again and passes
    assert read_json(row_path)["status"] == "passed"


@pytest.mark.slow
def test_uint8_input_variants_through_export_and_check(pipeline_run):
    """`export --precisions int8u8` adds the uint8-input INT8 artifacts to a finished
    run; `check` compares them with the QAT model like the float-input INT8 rows, and
    they keep its accuracy (the same quantized model behind a uint8 front)."""
    run, _ = pipeline_run
    targets = ["onnx", "openvino", "tflite", "executorch"]
    assert main(["export", "--run", str(run), "--precisions", "int8u8", "--targets", *targets,
                 "--no-progress"]) == 0
    assert main(["check", "--run", str(run)]) == 0
    rows = {(r["target"], r["precision"]): r for r in read_json(run / "report.json")["rows"]}
    assert ALL_ROWS | {(t, "int8u8") for t in targets} == set(rows)  # the other rows are kept
    for t in targets:
        r, f = rows[(t, "int8u8")], rows[(t, "int8")]
        assert r["status"] == "passed" and r["reference"] == "qat", (t, r.get("reason"))
        assert r["inspect"]["inputs"][0]["dtype"] in ("uint8", "u8"), r["inspect"]["inputs"]
        # the bytes reach the same quantized model: the metric moves by a few images at most
        assert abs(r["metric"]["AP"] - f["metric"]["AP"]) < 0.02, (t, r["metric"]["AP"], f["metric"]["AP"])
        meta = read_json(run / "exports" / f"{t}-int8u8" / "metadata.json")
        assert meta["input"]["dtype"] == "uint8" and meta["input"]["layout"] == "NHWC"
    assert main(["export", "--run", str(run), "--precisions", "int9"]) == 2  # a typo is one clear line
