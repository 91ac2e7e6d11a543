"""ONNX target: fp32 and QDQ int8 exports of a settled hrnet_w8_pose (128x96), checked
against PyTorch on drawn scenes; metadata in the file and beside it."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from hrnet_edge.errors import ConfigError, ExportError

pytest.importorskip("onnx", reason="onnx is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from converters.base import ExportJob  # noqa: E402
from converters.metadata import base_metadata  # noqa: E402
from converters.onnx import OnnxTarget, export_onnx, read_embedded_metadata  # noqa: E402

pytestmark = pytest.mark.export

# Thresholds relative to the largest |output| of the reference.
FP32_REL = 1e-4
# ONNX Runtime vs the NNCF torch model: the same QDQ arithmetic, but a different
# summation order flips single rounding steps, and this untrained net amplifies one
# flipped step to a few % of its output (NNCF torch batch-8 vs batch-1: ~4 %).
INT8_REL = 0.15
POSE_INFO = {"keypoint_names": [f"k{i}" for i in range(17)], "skeleton": [[0, 1], [1, 2]]}


def _job(model, precision, out_dir, **kw) -> ExportJob:
    return ExportJob(model=model, precision=precision, out_dir=out_dir,
                     metadata=base_metadata(model, POSE_INFO, "ab" * 32), **kw)


@pytest.fixture(scope="module")
def images(scene_images):
    return scene_images(8, seed=11)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, settled_pose_model):
    root = tmp_path_factory.mktemp("onnx")
    art = OnnxTarget().export(_job(settled_pose_model, "fp32", root / "onnx-fp32"))
    return root, {"fp32": art}


@pytest.fixture(scope="module")
def int8_artifact(exports, settled_pose_model, nncf_pose_model):
    root, arts = exports
    arts["int8"] = OnnxTarget().export(
        _job(settled_pose_model, "int8", root / "onnx-int8", qat_model=nncf_pose_model))
    return arts["int8"]


def _torch(model, x: np.ndarray) -> np.ndarray:
    """Image by image, as the artifact runs (batch size changes the summation order)."""
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])


def test_available():
    assert OnnxTarget().available() == (True, "")


@pytest.mark.numerics
def test_fp32_parity(exports, settled_pose_model, images, parity):
    _, arts = exports
    runner = OnnxTarget().load(arts["fp32"].path.parent, threads=2)
    out = runner(images)
    p = parity(out, _torch(settled_pose_model, images))
    assert out.shape == (8, 17, 32, 24)  # PyTorch layout, batch looped over the static batch 1
    assert p["rel"] < FP32_REL, p
    assert p["argmax_agreement"] == 1.0, p
    # random tensors as well: the same bound must hold off the image distribution
    x = np.random.default_rng(0).random((2, 3, 128, 96), dtype=np.float32)
    assert parity(runner(x), _torch(settled_pose_model, x))["rel"] < FP32_REL


@pytest.mark.numerics
def test_int8_parity(int8_artifact, nncf_pose_model, settled_pose_model, images, parity):
    out = OnnxTarget().load(int8_artifact.path.parent)(images)
    vs_qat = parity(out, _torch(nncf_pose_model, images))
    vs_fp32 = parity(out, _torch(settled_pose_model, images))
    print(f"onnx int8 vs NNCF torch {vs_qat}; vs fp32 torch {vs_fp32}")
    assert vs_qat["rel"] < INT8_REL and vs_qat["corr"] > 0.99, vs_qat
    assert vs_qat["argmax_agreement"] >= 0.85, vs_qat
    # Against the float model the (untrained) net's int8 error is large, but a layout,
    # normalization or calibration bug would drop both numbers to chance (~0, ~1 %).
    assert vs_fp32["corr"] > 0.9 and vs_fp32["argmax_agreement"] >= 0.5, vs_fp32


def test_int8_graph_is_qdq(int8_artifact):
    facts = OnnxTarget().inspect(int8_artifact.path.parent)
    assert facts["quantize_linear"] > 0 and facts["dequantize_linear"] > 0
    assert "FakeQuantize" not in facts["op_counts"]  # no OpenVINO-only custom op
    assert facts["opset"]["ai.onnx"] == 17


def test_metadata_file_and_embedded(exports):
    _, arts = exports
    art = arts["fp32"]
    meta = json.loads(art.metadata_path.read_text())
    assert meta["target"] == "onnx" and meta["precision"] == "fp32" and meta["format"] == "onnx"
    assert meta["variant"] == "hrnet_w8_pose" and meta["task"] == "pose"
    assert meta["checkpoint_sha256"] == "ab" * 32
    assert meta["input"] == {**meta["input"], "name": "input", "shape": [1, 3, 128, 96],
                             "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0]}
    assert meta["input"]["normalization"]["in_graph"] is True
    assert meta["output"]["shape"] == [1, 17, 32, 24] and meta["output"]["layout"] == "NCHW"
    assert meta["output"]["keypoint_names"] == POSE_INFO["keypoint_names"]
    assert meta["output"]["decoding"]["steps"]
    assert meta["tool_versions"]["onnx"] and meta["tool_versions"]["onnxruntime"]
    assert meta["artifact"]["file"] == "model.onnx" and len(meta["artifact"]["sha256"]) == 64
    embedded = read_embedded_metadata(art.path)
    assert embedded == {k: v for k, v in meta.items() if k != "artifact"}
    facts = OnnxTarget().inspect(art.path.parent)
    assert facts["inputs"][0]["shape"] == meta["input"]["shape"]
    assert facts["outputs"][0]["shape"] == meta["output"]["shape"]


def test_runner_threads(exports, images):
    _, arts = exports
    runner = OnnxTarget().load(arts["fp32"].path.parent, threads=1)
    a = runner(images[:1])
    runner.set_threads(2)
    # an export runs through the device runtime's adapter (hrnet_edge_runtime)
    assert runner.adapter.session.get_session_options().intra_op_num_threads == 2
    np.testing.assert_allclose(runner(images[:1]), a, rtol=0, atol=1e-5)


def test_a_changed_artifact_is_refused_before_it_runs(exports, tmp_path):
    """The checks run an export only when its files still have the sha256 that
    metadata.json records: a truncated or edited model is an error, not a checked row."""
    import shutil

    _, arts = exports
    copy = tmp_path / "onnx-fp32"
    shutil.copytree(arts["fp32"].path.parent, copy)
    OnnxTarget().load(copy)  # intact: loads
    model = copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(ExportError, match="sha256"):
        OnnxTarget().load(copy)


def test_export_onnx_function(tmp_path, settled_pose_model):
    onnx = pytest.importorskip("onnx")
    path = export_onnx(settled_pose_model, tmp_path / "sub" / "m.onnx", (128, 96))
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in model.graph.input] == ["input"]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary left over
    assert not settled_pose_model.training


def test_int8_without_qat_model_leaves_nothing(tmp_path, settled_pose_model):
    out = tmp_path / "onnx-int8"
    with pytest.raises(ExportError, match="qat_model"):
        OnnxTarget().export(_job(settled_pose_model, "int8", out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_precision(tmp_path, settled_pose_model):
    with pytest.raises(ConfigError, match="fp32"):
        OnnxTarget().export(_job(settled_pose_model, "fp16", tmp_path / "x"))


# --- converters.metadata (shared by every target; tested here, with the first target) ---

@pytest.mark.parametrize("name, shape, layout", [
    ("hrnet_w8_seg", [1, 19, 16, 16], "NCHW"),
    ("hrnet_w8_det", [1, 340, 85], "NPD"),
    ("hrnet_w8_cls", [1, 1000], "NC"),
])
def test_base_metadata_other_tasks(name, shape, layout):
    from hrnet_edge import create_model

    model = create_model(name, input_size=(64, 64))
    meta = base_metadata(model, {"classes": ["a", "b"]}, None)
    assert json.loads(json.dumps(meta)) == meta  # plain JSON, no tuples or arrays
    assert meta["output"]["shape"] == shape and meta["output"]["layout"] == layout
    assert meta["output"]["classes"] == ["a", "b"] and meta["output"]["decoding"]["steps"]
    if name == "hrnet_w8_det":  # the level sizes add up to the point count
        assert sum(h * w for h, w in meta["output"]["level_sizes"]) == shape[1]


def test_tool_versions_import_no_backend():
    import subprocess
    import sys

    code = ("import sys; from converters.metadata import tool_versions; v = tool_versions(); "
            "print(v['torch'], any(m in sys.modules for m in ('tensorflow', 'openvino', 'onnx2tf')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False"


def test_custom_domain_graph_is_refused(tmp_path, settled_pose_model):
    """A handed-over 'QDQ' file with OpenVINO-only FakeQuantize nodes (an unstripped
    NNCF export) is refused, and leaves nothing behind."""
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    node = h.make_node("FakeQuantize", ["input", "lo", "hi", "lo", "hi"], ["output"],
                       domain="org.openvinotoolkit", levels=256)
    graph = h.make_graph(
        [node], "fq",
        [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 128, 96])],
        [h.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 3, 128, 96])],
        [h.make_tensor("lo", onnx.TensorProto.FLOAT, [], [0.0]),
         h.make_tensor("hi", onnx.TensorProto.FLOAT, [], [1.0])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17),
                                               h.make_opsetid("org.openvinotoolkit", 1)])
    bad = tmp_path / "fq.onnx"
    onnx.save(model, str(bad))
    out = tmp_path / "onnx-int8"
    with pytest.raises(ExportError, match="org.openvinotoolkit"):
        OnnxTarget().export(_job(settled_pose_model, "int8", out, onnx_qdq_path=bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fq.onnx"]


def test_int8_batchnorm_folded_and_fused(int8_artifact):
    """BatchNorm sits between the QAT model's quantized convolutions and the next
    quantizer; folded into the weights, ONNX Runtime runs the convolutions as integer
    QLinearConv (with the BatchNorm there it ran all of them in float)."""
    meta = json.loads(int8_artifact.metadata_path.read_text())
    q = meta["quantization"]
    assert q["batchnorm_folded_into_conv"] > 50 and q["batchnorm_left"] == 0, q
    facts = OnnxTarget().inspect(int8_artifact.path.parent)
    assert facts["op_counts"].get("BatchNormalization", 0) == 0
    graph = facts["runtime_graph"]
    # the last convolution writes the float heatmaps (no quantizer after it)
    assert graph["integer_convs"] >= facts["op_counts"]["Conv"] - 1 and graph["float_convs"] <= 1, graph


def _without_activation_qdq(model):
    """The graph with every activation QuantizeLinear -> DequantizeLinear pair removed
    (weights stay quantized): a float function of the integer weights."""
    from converters.onnx_fold import _materialize_constants

    _materialize_constants(model.graph)
    inits = {t.name for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    rename = {}
    for node in model.graph.node:
        q = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
            rename[node.output[0]] = q.input[0]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    return model


def test_batchnorm_fold_is_exact(int8_artifact, nncf_pose_model, images, tmp_path):
    """Folded and unfolded graphs compute the same function of the same integer weights:
    with the activation quantizers taken out of both (each would turn a float-rounding
    difference into a whole step on some CPU), they agree to float rounding."""
    import onnx
    import onnxruntime as ort

    from converters.onnx import export_qdq_onnx

    unfolded = export_qdq_onnx(nncf_pose_model, tmp_path / "unfolded.onnx", (128, 96))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outs = []
    for path in (int8_artifact.path, unfolded):
        plain = _without_activation_qdq(onnx.load(str(path)))
        sess = ort.InferenceSession(plain.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs.append(np.concatenate([sess.run(None, {sess.get_inputs()[0].name: images[i:i + 1]})[0]
                                    for i in range(len(images))]))
    rel = np.abs(outs[0] - outs[1]).max() / np.abs(outs[1]).max()
    assert rel < 1e-4, rel
    # and a fold that kept the weights but broke a sign, a bias or a scale would not
    assert np.abs(outs[1]).max() > 0.1


def test_runner_refuses_the_silent_input_mistakes(exports, images):
    """An artifact fed 0..255 pixels or mean/std-normalized input computes garbage
    without complaint; every runner checks the 0..1 contract first."""
    from hrnet_edge.errors import DataError

    runner = OnnxTarget().load(exports[1]["fp32"].path.parent)
    cases = {
        "pixels in 0..255: divide by 255": images * 255,
        "looks mean/std-normalized": (images - 0.45) / 0.225,
        "float RGB in 0..1, got uint8": (images * 255).astype(np.uint8),
        "N x 3 x H x W": images.transpose(0, 2, 3, 1),  # NHWC
    }
    for hint, x in cases.items():
        with pytest.raises(DataError, match=re.escape(hint)):
            runner(x)
    assert runner(images[:1]).shape == (1, 17, 32, 24)  # the contract itself still runs
