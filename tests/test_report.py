"""report.md and pareto.png rendering from check rows (no models involved)."""
from __future__ import annotations

import numpy as np
import pytest

from converters.report import pareto_front, plot_pareto, qat_verdict, render_markdown

MAC = "Core ML runs only on macOS: MLModel.predict needs libcoremlpython, which coremltools ships for macOS only"


def _row(target, precision, status="passed", p50=1.0, top1=0.8, reason=None):
    row = {"target": target, "precision": precision, "status": status, "reason": reason, "reference": "fp32"}
    if status in ("passed", "reference"):
        row.update(latency={"p50_ms": p50, "p90_ms": p50 * 1.1}, metric={"top1": top1},
                   parity={"rel_max_abs": 1e-3, "psnr_db": 60.0, "cosine": 0.9999, "agreement": 1.0})
    return row


ROWS = [_row("pytorch", "fp32", "reference", 6.0, 0.79), _row("onnx", "fp32", p50=0.5, top1=0.79),
        _row("tflite", "int8", p50=0.3, top1=0.78), _row("openvino", "int8", p50=0.4, top1=0.80),
        _row("openvino", "bf16", p50=0.6, top1=0.75)] + \
       [_row("coreml", p, "not_runnable", reason=MAC) for p in ("fp16", "fp32", "int8")] + \
       [_row("executorch", "int8", "failed", reason="top-1 agreement 0.84 < 0.9")]


def _report(rows):
    return {"model": "hrnet_w8_cls", "machine": {"processor": "AMD EPYC", "cpu_count": 2},
            "metric": "top1", "metric_label": "top-1", "agreement_label": "top-1 agreement",
            "eval_note": "top-1", "input_size": [64, 64], "qat": None, "rows": rows,
            "summary": {"passed": 4, "failed": 1}}


def test_a_shared_reason_is_said_once():
    md = render_markdown(_report(ROWS))
    assert md.count(MAC) == 1 and "Note 1: " + MAC in md
    assert sum("| note 1 |" in line for line in md.splitlines()) == 3
    # a reason only one row has stays in its row
    assert "| top-1 agreement 0.84 < 0.9 |" in md


def test_pareto_front():
    pts = [(0.3, 0.78), (0.4, 0.80), (0.5, 0.79), (0.6, 0.75), (0.4, 0.70)]
    assert pareto_front(pts) == [(0.3, 0.78), (0.4, 0.80)]
    assert pareto_front([]) == []


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    path = tmp_path / "pareto.png"
    plot_pareto(path, ROWS, "top1", "top-1", machine="AMD EPYC")
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0] > 10  # something was drawn


def test_the_report_says_whether_qat_earned_its_place():
    assert "nothing measurable" in qat_verdict(0.7424, 0.7428)  # the pose default run
    assert qat_verdict(0.746, 0.796).startswith("QAT gains +0.0500")  # the classification default run
    assert "below post-training" in qat_verdict(0.75, 0.74)
    md = render_markdown({**_report(ROWS), "qat": {"fp32": 0.79, "ptq": 0.746, "qat": 0.796}})
    assert "INT8 after QAT 0.7960. QAT gains +0.0500" in md
    schedule = {"epochs": 1, "steps_per_epoch": 30, "batch_size": 16, "lr": 1e-4, "bias_correction": False}
    md = render_markdown({**_report(ROWS), "qat": {"fp32": 0.386, "ptq": 0.378, "qat": 0.386, "schedule": schedule}})
    assert ("QAT: 1 epoch(s) of 30 steps at batch 16, lr 0.0001; NNCF's bias correction off." in md), md
    # no fine-tuning ([qat] epochs = 0, detection's quick recipe): no verdict on a QAT that did not run
    md = render_markdown({**_report(ROWS), "qat": {"fp32": 0.3736, "ptq": 0.3721, "qat": 0.3721,
                                                   "schedule": {**schedule, "epochs": 0}}})
    assert "INT8 after NNCF init 0.3721; no QAT fine-tuning ([qat] epochs = 0)" in md, md
    assert "INT8 after QAT" not in md and "QAT changes the metric" not in md


def test_export_warnings_reach_the_note_column():
    warn = "warning: not delegated to XNNPACK (LiteRT kernels between 3 partitions): RESIZE_NEAREST_NEIGHBOR x7"
    rows = ROWS[:2] + [{**_row("tflite", "fp32", p50=0.4), "warnings": [warn]}]
    line = next(ln for ln in render_markdown(_report(rows)).splitlines() if ln.startswith("| tflite | fp32 |"))
    assert line.rstrip().endswith(f"| {warn} |")


def test_photo_agreement_shows_the_confident_share():
    row = {**_row("tflite", "int8", p50=0.3), "parity_natural": {"agreement": 0.915, "agreement_confident": 0.976}}
    line = next(ln for ln in render_markdown(_report(ROWS[:1] + [row])).splitlines()
                if ln.startswith("| tflite | int8 |"))
    assert "| 0.915 (0.976) |" in line
