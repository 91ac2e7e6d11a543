"""Segmentation and classification through the whole pipeline: generated real-format
data, training, NNCF QAT, every target and precision, checks, report.

Small configurations, trained just enough that outputs mean something, so that each
runnable row must pass its task's thresholds (parity relative to the logits' range,
pixel or top-1 agreement, metric drop) like the pose pipeline's.
"""
from __future__ import annotations

import json

import pytest

from hrnet_edge.cli import main
from hrnet_edge.io import read_json

SEG = """
model = "hrnet_w8_seg"
[model_overrides]
input_size = [64, 128]
[data]
synthetic_train_images = 160
synthetic_val_images = 16
synthetic_image_size = [128, 256]
workers = 0
[train]
epochs = 4
batch_size = 8
[qat]
calibration_images = 16
epochs = 1
batch_size = 8
[export]
calibration_images = 8
[check]
warmup = 2
iterations = 5
"""

CLS = """
model = "hrnet_w8_cls"
[model_overrides]
input_size = [64, 64]
num_outputs = 10
[data]
synthetic_train_per_class = 300
synthetic_val_per_class = 40
workers = 0
[train]
epochs = 6
batch_size = 32
[qat]
calibration_images = 16
epochs = 1
batch_size = 32
[export]
calibration_images = 8
[check]
warmup = 2
iterations = 5
"""

CONFIGS = {"seg": (SEG, "mIoU"), "cls": (CLS, "top1")}
ALL_ROWS = {("pytorch", "fp32"), ("pytorch", "int8"), ("onnx", "fp32"), ("onnx", "int8"),
            ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "bf16"), ("openvino", "int8"),
            ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"),
            ("executorch", "fp32"), ("executorch", "int8"),
            ("coreml", "fp16"), ("coreml", "fp32"), ("coreml", "int8")}


# Rows allowed to fail, with the reason (none now). TFLite and ExecuTorch INT8 used to
# fail here: they re-calibrated the QAT weights with their own quantizers, and on this
# short run's weak classifier (small logit margins) top-1 agreement with the QAT model
# fell to 0.75 / 0.81. They now keep the ranges QAT learned (quantization/carry.py).
KNOWN_GAPS: dict[str, set[tuple[str, str]]] = {}


XDIST_SPLIT_BY = "task_run"  # one xdist group per configuration (tests/conftest.py)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def task_run(request, tmp_path_factory):
    task = request.param
    root = tmp_path_factory.mktemp(f"pipe-{task}")
    cfg = root / f"{task}.toml"
    cfg.write_text(CONFIGS[task][0])
    run = root / "run"
    rc = main(["pipeline", "--config", str(cfg), "--run", str(run), "--no-progress"])
    return task, run, rc


@pytest.mark.slow
def test_every_row_passes(task_run):
    task, run, rc = task_run
    metric = CONFIGS[task][1]
    report = read_json(run / "report.json")
    assert report["task"] == task and report["metric"] == metric
    rows = {(r["target"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == ALL_ROWS
    failed = {k: r.get("reason") for k, r in rows.items()
              if r["status"] not in ("passed", "reference", "not_runnable")}
    assert rc == (1 if failed else 0)  # a failed row makes the command exit non-zero
    for key in set(failed) - KNOWN_GAPS.get(task, set()):
        # This short run's classifier is weak (top-1 ~0.4 on 400 images), and the
        # images two models disagree on (3-4 % for INT8) move top-1 by chance: measured
        # drops up to 0.0075 against the 0.01 limit. A row may fail only on that drop,
        # and only within two standard errors of the disagreements; parity and
        # agreement must pass.
        r = rows[key]
        t, par = r["thresholds"], r["parity"]
        assert task == "cls" and r["reason"].startswith("top-1 drop"), (key, r["reason"])
        assert par["agreement"] >= t["min_agreement"] and par["rel_max_abs"] <= t["max_rel_abs"], r
        n = r["metric"]["num_images"]
        assert r["metric_drop"] <= t["max_metric_drop"] + 2 * ((1 - par["agreement"]) / n) ** 0.5, r
    chance = 0.1 if task == "cls" else 1 / 19
    assert rows[("pytorch", "fp32")]["metric"][metric] > 1.5 * chance  # it learned something
    for key, r in rows.items():
        if r["status"] == "passed":
            assert r["metric_name"] == metric and 0 <= r["metric"][metric] <= 1
            assert 0 <= r["parity"]["agreement"] <= 1 and r["parity"]["rel_max_abs"] >= 0
            assert r["latency"]["p50_ms"] > 0 and r["size_bytes"] > 0
            assert r["reference"] == ("qat" if key[1] == "int8" else "fp32")
    for key in [("onnx", "fp32"), ("openvino", "fp32"), ("tflite", "fp32"), ("executorch", "fp32")]:
        assert rows[key]["parity"]["rel_max_abs"] < 1e-3, rows[key]["parity"]
    for p in ("fp16", "fp32", "int8"):
        assert rows[("coreml", p)]["status"] == "not_runnable" and rows[("coreml", p)]["inspect"]


@pytest.mark.slow
def test_metadata_and_report_speak_the_task(task_run):
    task, run, _ = task_run
    for meta_path in run.glob("exports/*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        assert meta["task"] == task and meta["variant"] == f"hrnet_w8_{task}"
        classes = meta["output"]["classes"]
        assert len(classes) == meta["output"]["num_classes"] and "class0" not in classes
        if task == "seg":
            assert meta["output"]["classes"][0] == "road" and len(meta["output"]["palette"]) == 19
    md = (run / "report.md").read_text()
    label = {"seg": "mIoU", "cls": "top-1"}[task]
    assert f"| {label} |" in md and "OKS" not in md
    assert (run / "pareto.png").stat().st_size > 0
