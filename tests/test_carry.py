"""QAT ranges carried into PT2E (the ExecuTorch INT8 route), checked in PyTorch.

The quantized PT2E program (``convert_pt2e`` output, re-exported) runs its
quantize/dequantize ops in PyTorch, so what the ranges do to the numbers is visible
without lowering to XNNPACK (the export tests and the pipeline test cover lowering).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hrnet_edge.deps import available

if not (available("nncf") and available("torchao") and available("executorch")):
    pytest.skip("needs nncf, torchao and executorch (extras 'qat', 'executorch')", allow_module_level=True)

from converters.executorch import _quantize_pt2e  # noqa: E402
from quantization import strip_to_float  # noqa: E402
from quantization.carry import _activation_quantizers, _qat_range  # noqa: E402

pytestmark = pytest.mark.export


def _psnr(out: np.ndarray, ref: np.ndarray) -> float:
    mse = float(((out - ref) ** 2).mean())
    return 10 * np.log10(float(np.ptp(ref)) ** 2 / max(mse, 1e-30))


@pytest.fixture(scope="module")
def setup(nncf_pose_model, scene_images):
    float_model = strip_to_float(nncf_pose_model, torch.from_numpy(scene_images(1, seed=5)))
    calib = scene_images(16, seed=11)
    example = torch.from_numpy(calib[:1])
    carried_ep, carried = _quantize_pt2e(float_model, example, calib, "qat", batch=8,
                                         carry_from=nncf_pose_model)
    plain_ep, plain = _quantize_pt2e(float_model, example, calib, "qat", batch=8)
    return carried_ep, carried, plain_ep, plain


def test_every_qat_range_is_carried(setup, nncf_pose_model, scene_images):
    _, facts, _, plain = setup
    n = len(_activation_quantizers(nncf_pose_model, torch.from_numpy(scene_images(1))))
    assert facts["qat_activation_quantizers"] == n > 50
    assert facts["qat_activation_quantizers_unmatched"] == 0
    # Nearly every observer reads a tensor QAT quantized; what is left is the model
    # input ahead of the in-graph normalization and its subtraction.
    assert facts["activation_ranges_from_qat"] >= n - 5
    assert facts["activation_ranges_calibrated"] <= 4
    assert "activation_ranges_from_qat" not in plain


def test_program_uses_the_qat_scales(setup, nncf_pose_model, scene_images):
    """Every NNCF activation scale appears as a quantize op's scale in the program."""
    ep = setup[0]
    scales = [float(n.args[1]) for n in ep.graph.nodes
              if n.op == "call_function" and "quantize_per_tensor" in str(n.target)
              and "dequantize" not in str(n.target)]
    for q in _activation_quantizers(nncf_pose_model, torch.from_numpy(scene_images(1))):
        low, high = _qat_range(q)
        want = (max(high, 0) - min(low, 0)) / 255
        assert min(abs(s - want) / want for s in scales) < 1e-5, (low, high)


def test_carried_ranges_track_the_qat_model(setup, nncf_pose_model, scene_images):
    """The point of carrying: the program computes what the QAT model computes, closer
    than re-calibrating the same weights does."""
    carried_ep, _, plain_ep, _ = setup
    x = torch.from_numpy(scene_images(8, seed=21))
    with torch.no_grad():
        ref = nncf_pose_model(x).numpy()
        carried = carried_ep.module()(x[:1]).numpy()
        plain = plain_ep.module()(x[:1]).numpy()
        carried = np.concatenate([carried] + [carried_ep.module()(x[i:i + 1]).numpy() for i in range(1, 8)])
        plain = np.concatenate([plain] + [plain_ep.module()(x[i:i + 1]).numpy() for i in range(1, 8)])
    psnr_carried, psnr_plain = _psnr(carried, ref), _psnr(plain, ref)
    # Measured on the AMD EPYC host: 34.6 dB carried, 30.2 dB re-calibrated (an
    # untrained net with flat heatmaps: every quantization step shows).
    assert psnr_carried > psnr_plain + 2.5, (psnr_carried, psnr_plain)
    print(f"PSNR vs QAT: carried {psnr_carried:.1f} dB, re-calibrated {psnr_plain:.1f} dB")
    assert psnr_carried > 31, psnr_carried


# --- TFLite: the ranges written into the flatbuffer ------------------------------------

@pytest.fixture(scope="module")
def tflite_pair(tmp_path_factory, nncf_pose_model, scene_images):
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed (extra 'tflite')")
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    from converters.base import ExportJob
    from converters.metadata import base_metadata
    from converters.onnx import export_onnx
    from converters.tflite import TfliteTarget

    root = tmp_path_factory.mktemp("tflite-carry")
    float_model = strip_to_float(nncf_pose_model, torch.from_numpy(scene_images(1, seed=5)))
    onnx_path = export_onnx(float_model, root / "qat.onnx", (128, 96))
    calib = scene_images(16, seed=11)
    meta = base_metadata(float_model, {}, None)
    out = {}
    for name, carry in (("carried", True), ("plain", False)):  # one onnx2tf run for both
        job = ExportJob(model=float_model, precision="int8", out_dir=root / name, metadata=meta,
                        calibration=calib, onnx_path=onnx_path, qat_model=nncf_pose_model,
                        qat_float_model=float_model, options={"carry_qat_ranges": carry})
        out[name] = TfliteTarget().export(job).path.parent
    return out


def test_tflite_carries_every_qat_range(tflite_pair, nncf_pose_model, scene_images):
    from converters.tflite import TfliteTarget

    q = json.loads((tflite_pair["carried"] / "metadata.json").read_text())["quantization"]
    n = len(_activation_quantizers(nncf_pose_model, torch.from_numpy(scene_images(1))))
    assert q["qat_activation_quantizers"] == n and q["qat_activation_quantizers_unmatched"] == 0, q
    assert q["activation_ranges_from_qat"] >= n and q["activation_ranges_calibrated"] <= 4, q
    assert q["biases_requantized"] > 50, q
    plain = json.loads((tflite_pair["plain"] / "metadata.json").read_text())["quantization"]
    assert "activation_ranges_from_qat" not in plain
    # Rewriting scales must not cost delegation: XNNPACK takes the same ops.
    facts = {k: TfliteTarget().inspect(v) for k, v in tflite_pair.items()}
    assert facts["carried"]["delegated_ops"] == facts["plain"]["delegated_ops"] > 0
    assert facts["carried"]["delegate_partitions"] == facts["plain"]["delegate_partitions"]


def test_tflite_carried_ranges_track_the_qat_model(tflite_pair, nncf_pose_model, scene_images):
    from converters.tflite import TfliteTarget

    x = scene_images(8, seed=21)
    with torch.no_grad():
        ref = nncf_pose_model(torch.from_numpy(x)).numpy()
    psnr = {k: _psnr(TfliteTarget().load(v)(x), ref) for k, v in tflite_pair.items()}
    print(f"TFLite PSNR vs QAT: {psnr}")
    # Measured on the AMD EPYC host: 35.1 dB carried, 28.6 dB as onnx2tf calibrates.
    assert psnr["carried"] > psnr["plain"] + 4, psnr
    assert psnr["carried"] > 32, psnr


def test_tflite_input_keeps_its_grey_levels(tflite_pair):
    """The normalization's subtraction gets its own range (x - mean spans about 1.1),
    not the wider scale of the normalized tensor onnx2tf gives it: one step per grey
    level or finer, instead of one per ~5."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fb

    from converters.tflite_ranges import _op_names

    steps = {}
    for name, folder in tflite_pair.items():
        model = fb.read_model(str(folder / "model.tflite"))
        sub = model.subgraphs[0]
        (op,) = [op for op, n in zip(sub.operators, _op_names(model, schema)) if n == "SUB"]
        steps[name] = float(sub.tensors[op.outputs[0]].quantization.scale[0]) * 255
    assert steps["carried"] < 1.2, steps  # in grey levels per step
    assert steps["plain"] > 2 * steps["carried"], steps
