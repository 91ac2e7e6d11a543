"""The detection task's pieces that work today, before it joins the pipeline: evaluation
of a model through the COCO loader, the numpy decoder and COCOeval; the detection
agreement; the head's eval-mode output equal to its train-mode output after settling
(per-level BatchNorm); float exports of the head matching PyTorch per runtime."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hrnet_edge.models import create_model
from hrnet_edge.runconfig import load_run_config
from hrnet_edge.tasks.base import build_section
from hrnet_edge.tasks.det import DetData, DetEval, DetTask, _pack, _unpack

SIZE = (128, 128)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hrnet_edge.data.synthetic_det import generate_synthetic_coco_instances

    root = tmp_path_factory.mktemp("det")
    generate_synthetic_coco_instances(root, num_train=16, num_val=12, image_size=(256, 256), seed=3)
    cfg = load_run_config(None, model="hrnet_w8_det")
    cfg = dataclasses.replace(cfg, model_overrides={"input_size": SIZE, "num_outputs": 6, "head_channels": 32},
                              data=build_section(DetData, {"root": str(root)}, "data"),
                              eval=build_section(DetEval, {}, "eval"))
    task = DetTask()
    val = task.build_dataset(root, "val", cfg, train=False)
    torch.manual_seed(0)
    model = create_model("hrnet_w8_det", input_size=SIZE, num_outputs=6, head_channels=32)
    model.train()
    with torch.no_grad():  # settle BatchNorm on real images
        model(torch.from_numpy(val.stack_images(list(range(8)))))
    return task, cfg, val, model.eval()


def test_evaluate_through_loader_decoder_and_cocoeval(setup):
    from hrnet_edge.tasks import torch_infer

    task, cfg, val, model = setup
    r = task.evaluate(torch_infer(model), val, cfg, batch_size=5, keep_outputs=True)
    assert set(r.metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}
    assert 0 <= r.metrics["AP"] <= 1  # an untrained head: a number, not a crash
    assert r.outputs.shape == (12, sum((32 // 2**i) ** 2 for i in range(4)), 11)
    assert list(r.ids) == val.image_ids[:12]
    # the same outputs compared with themselves agree fully, raw and decoded
    p = task.parity(r, r, val)
    assert p["agreement"] == 1.0 and p["cosine"] == pytest.approx(1.0)
    assert len(p["levels"]) == 4 and all(lv["cosine"] == pytest.approx(1.0) for lv in p["levels"])


def test_pack_roundtrip_and_agreement_counts(setup):
    from hrnet_edge.evaluation.detection import Detections

    task, cfg, _val, _model = setup
    task._bind(cfg)
    a = Detections(np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([0.9, 0.8], np.float32),
                   np.array([1, 2]))
    b = Detections(np.array([[0, 0, 10, 10]], np.float32), np.array([0.95], np.float32), np.array([1]))
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    back = _unpack(_pack([a, empty, b]), 3)
    assert [len(d) for d in back] == [2, 0, 1]
    np.testing.assert_array_equal(back[0].boxes, a.boxes)
    # ref: 2 + 1 detections above 0.3, out reproduces 2 of them: recall 2/3; out's own 2 all in ref
    both, recall, precision, _ = task._agree([a, b], [b, b])
    assert (recall, precision, both) == pytest.approx((2 / 3, 1.0, 2 / 3))


@pytest.mark.export
@pytest.mark.numerics
@pytest.mark.parametrize("name", ["onnx", "openvino", "tflite", "executorch"])
def test_float_exports_of_the_head_match_pytorch(setup, tmp_path, name):
    """The per-level towers, the pooling written as a convolution and the channels-last
    output layout export to every runtime (onnx2tf once failed on the transposed layout,
    ExecuTorch folded per-level BatchNorm into a shared weight)."""
    from converters.base import ExportJob
    from converters.metadata import base_metadata
    from converters.onnx import export_onnx
    from converters.registry import get_target

    _task, _cfg, val, model = setup
    target = get_target(name)
    ok, reason = target.available()
    if not ok:
        pytest.skip(reason)
    x = val.stack_images([0, 1])
    job = ExportJob(model=model, precision="fp32", out_dir=tmp_path / name, metadata=base_metadata(model),
                    calibration=x, options={"upsample_form": "broadcast"})
    if name == "tflite":
        job.onnx_path = export_onnx(model, tmp_path / "fp32.onnx", SIZE)
    out = target.load(target.export(job).path.parent)(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() / (ref.max() - ref.min()) < 1e-4


def test_per_level_predictors_keep_outputs_and_leave_nothing(setup):
    from hrnet_edge.models.heads import per_level_predictors

    _task, _cfg, val, model = setup
    x = torch.from_numpy(val.stack_images([0, 1]))
    keys = set(model.state_dict())
    with torch.no_grad():
        ref = model(x)
        with per_level_predictors(model) as n:
            assert n == 1 and len(model.head.per_level) == model.cfg.det_levels
            copied = model(x)
            # each level has its own modules (not the shared ones)
            assert model.head.per_level[0][0] is not model.head.box
    assert torch.equal(ref, copied)
    assert set(model.state_dict()) == keys and "per_level" not in model.head._modules


@pytest.mark.export  # not `numerics`: XNNPACK picks its kernels itself, the AVX2 cap re-run adds nothing
def test_executorch_int8_of_the_head_loads_and_follows_pytorch(setup, tmp_path):
    """XNNPACK once refused to compile the INT8 head (a predictor shared by levels with
    differently scaled inputs gets one int32 bias that fits one level only); the export
    copies the predictors per level. The program must load and follow the float model."""
    from converters.base import ExportJob
    from converters.metadata import base_metadata
    from converters.registry import get_target

    _task, _cfg, val, model = setup
    target = get_target("executorch")
    ok, reason = target.available()
    if not ok:
        pytest.skip(reason)
    x = val.stack_images(list(range(8)))
    job = ExportJob(model=model, precision="int8", out_dir=tmp_path / "et", metadata=base_metadata(model),
                    calibration=x, options={"upsample_form": "broadcast"})
    art = target.export(job)
    assert "per pyramid level" in art.metadata_path.read_text()
    out = target.load(art.path.parent)(x[:4])
    with torch.no_grad():
        ref = model(torch.from_numpy(x[:4])).numpy()
    assert out.shape == ref.shape
    cos = float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref)))
    assert cos > 0.95, cos
