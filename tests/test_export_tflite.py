"""TFLite target: onnx2tf float32, float16 and full-integer int8 exports of a settled
hrnet_w8_pose (128x96), checked against PyTorch on drawn scenes; NHWC artifact behind
the NCHW runner; metadata beside and inside the flatbuffer; failures leave nothing.

onnx2tf takes tens of seconds per conversion; the target reuses one run for every
precision of the same ONNX file, so the module converts once.
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from hrnet_edge.errors import ExportError

pytest.importorskip("onnx2tf", reason="onnx2tf is not installed (extra 'tflite')")
pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed (extra 'tflite')")

from converters.base import AdapterRunner, ExportJob  # noqa: E402
from converters.metadata import base_metadata  # noqa: E402
from converters.onnx import export_onnx  # noqa: E402
from converters.tflite import SAMPLE_FILE, TfliteTarget, read_embedded_metadata  # noqa: E402

pytestmark = pytest.mark.export

REL = {"fp32": 1e-4, "fp16": 1e-2}


def _torch(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])


@pytest.fixture(scope="module")
def images(scene_images):
    return scene_images(8, seed=31)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, settled_pose_model, scene_images):
    root = tmp_path_factory.mktemp("tflite")
    onnx_path = export_onnx(settled_pose_model, root / "intermediate" / "fp32.onnx", (128, 96))
    calibration = scene_images(16, seed=41)  # stands in for the training images
    meta = base_metadata(settled_pose_model, {}, None)

    def job(precision, out_dir, **kw):
        kw.setdefault("onnx_path", onnx_path)
        return ExportJob(model=settled_pose_model, precision=precision, out_dir=out_dir,
                         metadata=meta, calibration=calibration, **kw)

    return root, onnx_path, job


@pytest.fixture(scope="module")
def artifacts(setup):
    root, onnx_path, job = setup
    before = onnx_path.read_bytes()
    cwd = os.getcwd()

    def no_network(*args, **kwargs):
        raise AssertionError(f"the TFLite export tried to reach the network: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        # int8 first: its onnx2tf run also writes the float models, which the next
        # exports of the same ONNX reuse (one conversion for the module).
        arts = {p: TfliteTarget().export(job(p, root / f"tflite-{p}")) for p in ("int8", "fp32", "fp16")}
    assert onnx_path.read_bytes() == before, "onnx2tf rewrote the handed-over ONNX file"
    assert os.getcwd() == cwd and not os.path.exists(os.path.join(cwd, SAMPLE_FILE))
    return arts


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float_parity(artifacts, settled_pose_model, images, parity, precision):
    out = TfliteTarget().load(artifacts[precision].path.parent, threads=2)(images)
    p = parity(out, _torch(settled_pose_model, images))
    print(f"tflite {precision}: {p}")
    assert out.shape == (8, 17, 32, 24)  # back in the PyTorch layout
    assert p["rel"] < REL[precision], p
    assert p["argmax_agreement"] >= (1.0 if precision == "fp32" else 0.95), p


def test_float_only_conversion_skips_the_saved_model(setup, settled_pose_model, images, parity, tmp_path):
    """A conversion without calibration (the pipeline's float exports) keeps onnx2tf from
    writing its SavedModel, which only the full-integer conversion reads; the float
    model it writes still matches PyTorch, and TensorFlow's own save is back after.
    (Run beside the target, so the module's kept conversion stays for the other tests.)"""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    import converters.tflite as tfl

    _, onnx_path, _ = setup
    save = tf.saved_model.save
    out = tfl._onnx2tf(onnx_path, tmp_path, tfl._sample_images(None, 128, 96), None)
    assert tf.saved_model.save is save
    written = {p.name for p in out.iterdir()}
    assert {"model_float32.tflite", "model_float16.tflite"} <= written, written
    assert not written & {"saved_model.pb", "variables"}, written
    it = Interpreter(model_path=str(out / "model_float32.tflite"))
    it.allocate_tensors()
    got = []
    for x in images:  # NHWC in, NHWC out
        it.set_tensor(it.get_input_details()[0]["index"], x[None].transpose(0, 2, 3, 1))
        it.invoke()
        got.append(it.get_tensor(it.get_output_details()[0]["index"]).transpose(0, 3, 1, 2))
    p = parity(np.concatenate(got), _torch(settled_pose_model, images))
    assert p["rel"] < REL["fp32"] and p["argmax_agreement"] == 1.0, p


def test_int8_parity(artifacts, settled_pose_model, images, parity):
    runner = TfliteTarget().load(artifacts["int8"].path.parent)
    assert runner.adapter.input["dtype"] == np.float32  # float I/O, quantized inside (the device adapter)
    p = parity(runner(images), _torch(settled_pose_model, images))
    print(f"tflite int8 vs fp32 torch: {p}")
    # Post-training int8 of an untrained net against its float self: large values,
    # but a layout, normalization or calibration bug sends both to chance.
    assert p["corr"] > 0.9 and p["argmax_agreement"] >= 0.3, p


def test_metadata_records_nhwc(artifacts):
    for precision, art in artifacts.items():
        meta = json.loads(art.metadata_path.read_text())
        assert meta["target"] == "tflite" and meta["precision"] == precision
        assert meta["input"]["layout"] == "NHWC" and meta["input"]["shape"] == [1, 128, 96, 3]
        assert meta["output"]["layout"] == "NHWC" and meta["output"]["shape"] == [1, 32, 24, 17]
        assert meta["input"]["dtype"] == "float32" and meta["output"]["dtype"] == "float32"
        assert meta["tool_versions"]["onnx2tf"] and meta["tool_versions"]["ai-edge-litert"]
        assert read_embedded_metadata(art.path) == {k: v for k, v in meta.items() if k != "artifact"}
    q = json.loads(artifacts["int8"].metadata_path.read_text())["quantization"]
    assert q["calibration_images"] == 16 and q["io"].startswith("float32")


def test_inspect(artifacts):
    facts = {p: TfliteTarget().inspect(a.path.parent) for p, a in artifacts.items()}
    for f in facts.values():
        assert f["flex_ops"] == [] and f["embedded_metadata"] and f["op_counts"]["CONV_2D"] > 0
        assert f["delegate_partitions"] >= 1
        assert f["inputs"][0]["shape"] == [1, 128, 96, 3]
    assert facts["fp16"]["op_counts"].get("DEQUANTIZE", 0) > 0  # fp16 weights
    assert facts["int8"]["op_counts"].get("QUANTIZE", 0) >= 1
    # XNNPACK runs no nearest-neighbour resize (TOOLCHAIN.md): the fuse layers' upsamples
    assert "RESIZE_NEAREST_NEIGHBOR" in facts["fp32"]["non_delegated_ops"]


def test_broken_onnx_leaves_nothing(setup):
    root, _, job = setup
    broken = root / "broken.onnx"
    broken.write_bytes(b"this is not an onnx file")
    out = root / "tflite-broken"
    with pytest.raises(ExportError, match="onnx2tf|tflite"):
        TfliteTarget().export(job("fp32", out, onnx_path=broken))
    assert not out.exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".tflite-broken")]


def test_missing_inputs_are_typed_errors(setup, tmp_path):
    _, _, job = setup
    with pytest.raises(ExportError, match="onnx_path"):
        TfliteTarget().export(job("fp32", tmp_path / "a", onnx_path=tmp_path / "missing.onnx"))
    bad = job("int8", tmp_path / "b")
    bad.calibration = bad.calibration[:, :, :64]  # wrong size
    with pytest.raises(ExportError, match="calibration"):
        TfliteTarget().export(bad)
    assert list(tmp_path.iterdir()) == []


def test_runner_int8_io_dequantizes():
    """The device runtime's LiteRT adapter (de)quantizes int8 I/O with the tensor's scale
    and zero point."""
    from hrnet_edge_runtime.adapters.litert import dequantize, quantize

    detail = {"dtype": np.int8, "quantization": (1 / 255, -128)}
    x = np.linspace(0, 1, 256, dtype=np.float32)
    q = quantize(x, detail)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() == 127
    np.testing.assert_allclose(dequantize(q, detail), x, atol=0.5 / 255 + 1e-7)


def test_int8_io_artifact(setup, settled_pose_model, images, parity):
    root, _, job = setup
    art = TfliteTarget().export(job("int8", root / "tflite-int8-io", options={"int8_io": True}))
    meta = json.loads(art.metadata_path.read_text())
    assert meta["input"]["dtype"] == "int8" and "scale" in meta["input"]["quantization"]
    runner = TfliteTarget().load(art.path.parent)
    assert isinstance(runner, AdapterRunner)  # the device runtime's code, as every other artifact
    from hrnet_edge_runtime.metadata import load_artifact

    assert load_artifact(art.path.parent).input.dtype == "float32"  # the app feeds floats; the adapter quantizes
    from hrnet_edge_runtime.errors import ArtifactError

    broken = json.loads(json.dumps(meta))
    broken["input"]["quantization"] = {"scale": 0.0, "zero_point": 3}
    art.metadata_path.write_text(json.dumps(broken))
    try:
        with pytest.raises(ArtifactError, match="int8 input needs 'input.quantization'"):
            load_artifact(art.path.parent)
    finally:
        art.metadata_path.write_text(json.dumps(meta))
    p = parity(runner(images), _torch(settled_pose_model, images))
    assert p["corr"] > 0.9 and p["argmax_agreement"] >= 0.3, p


def test_broadcast_upsampling_is_one_partition(setup, settled_pose_model, images, parity, artifacts):
    """upsample_form='broadcast' writes the fuse layers' nearest upsampling as reshape x
    ones: XNNPACK takes the whole graph (one partition) and the outputs do not change.
    The default form leaves RESIZE_NEAREST_NEIGHBOR out, and the metadata warns."""
    from hrnet_edge.models.blocks import upsample_form

    root, _, job = setup
    onnx_path = root / "intermediate" / "fp32-broadcast.onnx"
    with upsample_form(settled_pose_model, "broadcast"):
        export_onnx(settled_pose_model, onnx_path, (128, 96))
    art = TfliteTarget().export(job("fp32", root / "tflite-fp32-broadcast", onnx_path=onnx_path,
                                    options={"upsample_form": "broadcast"}))
    facts = TfliteTarget().inspect(art.path.parent)
    assert facts["delegate_partitions"] == 1 and facts["non_delegated_ops"] == {}, facts
    p = parity(TfliteTarget().load(art.path.parent)(images), _torch(settled_pose_model, images))
    assert p["rel"] < REL["fp32"] and p["argmax_agreement"] == 1.0, p
    meta = json.loads(art.metadata_path.read_text())
    assert meta["upsample_form"]["form"] == "broadcast" and meta["delegation"]["delegate_partitions"] == 1
    assert any("whole graph runs in 1 XNNPACK partition" in n for n in meta["notes"]), meta["notes"]
    default = json.loads(artifacts["fp32"].metadata_path.read_text())
    warning = [n for n in default["notes"] if n.startswith("warning: not delegated")]
    assert warning and "RESIZE_NEAREST_NEIGHBOR" in warning[0] and "upsample_form" in warning[0], default["notes"]
