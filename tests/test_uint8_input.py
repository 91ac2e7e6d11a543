"""INT8 artifacts that take what apps hold: uint8 RGB NHWC (precision ``int8u8``).

For every target that offers it, the uint8-input export of a settled hrnet_w8_pose
(128x96) is checked against the float-input INT8 export of the same model and
quantization: the runtime's own input is uint8 NHWC, the metadata says so, the runner
feeds it pixels, and the outputs match the float-input INT8 artifact's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from converters.base import FLOAT_NCHW, UINT8_INPUT, UINT8_NHWC, ExportJob, to_uint8_nhwc
from converters.metadata import base_metadata
from converters.registry import get_target
from hrnet_edge.errors import DataError

pytestmark = pytest.mark.export

TARGETS = ("onnx", "openvino", "tflite", "executorch")
# How close the uint8-input artifact must stay to the float-input one (max |error| over
# the output range; heatmap peak agreement). ONNX and OpenVINO run the same quantized
# graph behind a cast; TFLite requantizes the bytes to the input's int8 scale (one
# rounding step); ExecuTorch calibrates its own quantizer for the uint8 graph, and on this
# untrained net's flat heatmaps that moves peaks: 0.846 under an AVX2 cap (corr 0.997).
# A layout or scaling bug sends the correlation to ~0 and the peaks to chance (1/768).
CLOSE = {"onnx": (0.02, 0.97), "openvino": (0.02, 0.97), "tflite": (0.1, 0.9), "executorch": (0.25, 0.75)}
# the runtime's own name of the input's element type
UINT8_NAMES = {"onnx": "uint8", "openvino": "u8", "tflite": "uint8", "executorch": "uint8"}


@pytest.fixture(scope="module")
def images(scene_images):
    # pixels as an 8-bit camera gives them: both routes then see the same values
    return (np.rint(scene_images(8, seed=51) * 255) / 255).astype(np.float32)


class _Exports:
    """Artifacts per target, exported on first use: a run that selects some targets
    (the AVX2-cap rerun leaves TFLite out) pays for those alone."""

    def __init__(self, root, model, qat_model, calibration):
        self.root, self.model, self.qat_model, self.calibration = root, model, qat_model, calibration
        self._done: dict[str, dict[str, object]] = {}
        self._onnx = None

    def __getitem__(self, name: str) -> dict[str, object]:
        if name not in self._done:
            self._done[name] = self._export(name)
        return self._done[name]

    def _export(self, name: str) -> dict[str, object]:
        from converters.onnx import export_onnx

        target = get_target(name)
        ok, reason = target.available()
        if not ok:
            return {"skip": reason}
        meta = base_metadata(self.model, {}, None)
        out: dict[str, object] = {}
        for precision in ("int8", UINT8_INPUT):
            job = ExportJob(model=self.model, precision=precision, out_dir=self.root / f"{name}-{precision}",
                            metadata=meta, calibration=self.calibration)
            if name in ("onnx", "openvino"):
                job.qat_model = self.qat_model
            elif name == "tflite":
                if self._onnx is None:
                    self._onnx = export_onnx(self.model, self.root / "fp32.onnx", (128, 96))
                job.onnx_path = self._onnx
            else:
                job.qat_float_model = self.model
            out[precision] = target.export(job).path.parent
        return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, settled_pose_model, nncf_pose_model, scene_images):
    """{target: {precision: artifact dir}} for int8 and int8u8, or a skip reason."""
    calibration = (np.rint(scene_images(16, seed=61) * 255) / 255).astype(np.float32)
    return _Exports(tmp_path_factory.mktemp("u8"), settled_pose_model, nncf_pose_model, calibration)


def _dirs(exported, name):
    if "skip" in exported[name]:
        pytest.skip(exported[name]["skip"])
    return exported[name]


@pytest.mark.parametrize("name", TARGETS)
def test_metadata_and_runtime_input_are_uint8_nhwc(exported, name):
    from hrnet_edge.io import read_json

    dirs = _dirs(exported, name)
    meta = read_json(dirs[UINT8_INPUT] / "metadata.json")
    assert meta["precision"] == UINT8_INPUT
    inp = meta["input"]
    assert (inp["dtype"], inp["layout"], inp["shape"], inp["range"]) == ("uint8", "NHWC", [1, 128, 96, 3], [0, 255])
    assert "255" in inp["normalization"]["recipe"]
    facts = get_target(name).inspect(dirs[UINT8_INPUT])
    assert facts["inputs"][0]["dtype"] == UINT8_NAMES[name], facts.get("inputs")
    shape = [int(d) for d in facts["inputs"][0]["shape"]]
    assert shape == [1, 128, 96, 3], shape


@pytest.mark.numerics
@pytest.mark.parametrize("name", TARGETS)
def test_uint8_artifact_matches_the_float_input_int8(exported, name, images, parity):
    dirs = _dirs(exported, name)
    target = get_target(name)
    u8, f = target.load(dirs[UINT8_INPUT]), target.load(dirs["int8"])
    assert (u8.input_form, f.input_form) == (UINT8_NHWC, FLOAT_NCHW)
    # the bytes an app holds, made here without the runner's conversion
    pixels = np.ascontiguousarray((images * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))
    out = u8.run(pixels)
    np.testing.assert_array_equal(out, u8(images))  # the runner converts to exactly those bytes
    p = parity(out, f(images))
    print(f"{name} int8u8 vs int8: {p}")
    rel, agree = CLOSE[name]
    assert out.shape == (8, 17, 32, 24)
    assert p["rel"] < rel and p["argmax_agreement"] >= agree and p["corr"] > 0.99, p


@pytest.mark.numerics
def test_executorch_uint8_keeps_the_model(exported, images, parity, settled_pose_model):
    """ExecuTorch's uint8 graph is quantized on its own: against the float model it must
    do as well as the float-input INT8 artifact does (a dropped /255 or a wrong permute
    would send it to chance)."""
    dirs = _dirs(exported, "executorch")
    target = get_target("executorch")
    with torch.no_grad():
        ref = np.concatenate([settled_pose_model(torch.from_numpy(images[i:i + 1])).numpy() for i in range(8)])
    p_u8 = parity(target.load(dirs[UINT8_INPUT])(images), ref)
    p_f = parity(target.load(dirs["int8"])(images), ref)
    assert p_u8["corr"] > 0.9 and p_u8["argmax_agreement"] >= p_f["argmax_agreement"] - 0.1, (p_u8, p_f)


def test_uint8_conversion_and_guard():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) % 256 / 255
    u8 = to_uint8_nhwc(x)
    assert u8.dtype == np.uint8 and u8.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(u8.transpose(0, 3, 1, 2), np.arange(120).reshape(2, 3, 4, 5) % 256)
    with pytest.raises(DataError, match="0..255"):
        to_uint8_nhwc(x * 255)  # the float contract still guards the runner's input


def test_uint8_is_exported_only_when_named():
    from hrnet_edge.pipeline.stages import planned_exports
    from hrnet_edge.runconfig import load_run_config

    cfg = load_run_config(None, model="hrnet_w8_pose")
    assert not any(p == UINT8_INPUT for _t, p in planned_exports(cfg))
    import dataclasses

    named = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, precisions=("int8", UINT8_INPUT)))
    pairs = planned_exports(named)
    assert {t for t, p in pairs if p == UINT8_INPUT} == {"onnx", "openvino", "tflite", "executorch"}
