"""Core ML target: FP16, FP32 and weight-only INT8 packages of a tiny pose HRNet.

Core ML cannot run on Linux, so these tests check what can be checked here: the spec
(inputs, outputs, types), the MIL program (op types, quantized weight ops), the
embedded metadata, the package sizes, and that a failed conversion leaves nothing.
The model is hrnet_w8_pose with one basic block per branch (same stem, transitions and
fuse layers as the full variant, fewer ops to convert).
"""
from __future__ import annotations

import json
import sys

import pytest
import torch

from hrnet_edge import create_model
from hrnet_edge.errors import ConfigError, ExportError, HRNetEdgeError

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra 'coreml')")

from converters.base import ExportJob  # noqa: E402
from converters.coreml import EMBED_KEY, CoreMLTarget  # noqa: E402

pytestmark = pytest.mark.export

INPUT_SIZE = (128, 96)
HEATMAPS = [1, 17, 32, 24]
DEPTH = {"stage_blocks": (1, 1, 1)}


def make_job(model, precision, out_dir, **kw) -> ExportJob:
    from converters.metadata import base_metadata

    return ExportJob(model=model, precision=precision, out_dir=out_dir,
                     metadata=base_metadata(model), **kw)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("hrnet_w8_pose", input_size=INPUT_SIZE, **DEPTH).eval()


@pytest.fixture(scope="module")
def small_model():
    """A small input for the side tests that convert once more."""
    torch.manual_seed(0)
    return create_model("hrnet_w8_pose", input_size=(64, 64), **DEPTH).eval()


@pytest.fixture(scope="module")
def target():
    return CoreMLTarget()


@pytest.fixture(scope="module")
def packages(tmp_path_factory, model, target):
    """One package per precision, converted once for the module."""
    root = tmp_path_factory.mktemp("coreml")
    out = {}
    for precision in ("fp16", "fp32", "int8"):
        out[precision] = root / f"coreml-{precision}"
        target.export(make_job(model, precision, out[precision], qat_float_model=model))
    return out


def test_target_attributes(target):
    assert (target.name, target.suffix, target.extra) == ("coreml", ".mlpackage", "coreml")
    assert set(target.precisions) == {"fp16", "fp32", "int8"}
    assert target.available() == (True, "")


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS answer")
def test_not_runnable_off_macos(target, packages):
    ok, reason = target.runnable()
    assert not ok and "macOS" in reason
    with pytest.raises(HRNetEdgeError, match="macOS"):
        target.load(packages["fp32"])


@pytest.mark.parametrize("precision, dtype", [("fp16", "float16"), ("fp32", "float32"),
                                              ("int8", "float16")])
def test_spec_facts(packages, target, precision, dtype):
    facts = target.inspect(packages[precision])
    assert facts["spec_type"] == "mlProgram"
    assert facts["inputs"] == [{"name": "input", "kind": "imageType", "shape": [1, 3, *INPUT_SIZE],
                                "color_space": "RGB"}]
    assert facts["outputs"] == [{"name": "output", "kind": "multiArrayType", "shape": HEATMAPS,
                                 "dtype": dtype}]
    ops = facts["mil_ops"]
    # nearest: the fuse layers (10 with the four-stream output of the V2 pose head);
    # bilinear: the head bringing streams 2-4 up to stride 4
    assert ops["conv"] >= 40 and ops["upsample_nearest_neighbor"] == 10
    assert ops["upsample_bilinear"] == 3 and ops["concat"] == 1
    # In-graph normalization survives: (x/255 - mean) * (1/std) as sub/mul ops.
    assert ops.get("sub", 0) >= 1 and ops.get("mul", 0) >= 1
    assert facts["author"] == "hrnet-edge"
    assert {EMBED_KEY, "variant", "task", "precision"} <= set(facts["user_defined_metadata"])
    assert facts["numerics_checked"] is False


def test_int8_has_quantized_weights(packages, target):
    fp16, int8 = target.inspect(packages["fp16"]), target.inspect(packages["int8"])
    assert fp16["quantized_weights"] == 0
    assert int8["quantized_weight_ops"].get("constexpr_affine_dequantize", 0) >= 10
    assert int8["quantized_weights"] <= int8["mil_ops"]["conv"]  # small convs stay FP16
    meta = json.loads((packages["int8"] / "metadata.json").read_text())
    assert meta["quantization"]["quantized_weights"] == int8["quantized_weights"]


def test_sizes_shrink_with_precision(packages, target):
    size = {p: target.inspect(d)["size_bytes"] for p, d in packages.items()}
    # Roughly halves each step; the spec and the package layout add a fixed part.
    assert size["fp32"] > 1.5 * size["fp16"], size
    assert size["fp16"] > 1.3 * size["int8"], size


@pytest.mark.parametrize("precision", ["fp16", "fp32", "int8"])
def test_metadata_embedded_and_written(packages, precision):
    folder = packages[precision]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["target"] == "coreml" and meta["precision"] == precision
    assert meta["format"] == "coreml_mlpackage" and meta["tool_versions"]["coremltools"]
    assert meta["input"]["kind"] == "image" and meta["input"]["range"] == [0, 255]
    assert "as is" in meta["input"]["normalization"]["recipe"]
    assert meta["output"]["shape"] == HEATMAPS
    assert meta["artifact"]["file"] == "model.mlpackage" and meta["artifact"]["size_bytes"] > 0
    spec = ct.utils.load_spec(str(folder / "model.mlpackage"))
    embedded = json.loads(spec.description.metadata.userDefined[EMBED_KEY])
    assert embedded["variant"] == "hrnet_w8_pose" and embedded["precision"] == precision
    assert embedded["input"] == meta["input"] and embedded["output"] == meta["output"]
    if precision == "int8":
        assert "weight-only" in meta["quantization"]["method"]
        assert meta["quantization"]["activations"].startswith("float16")
        assert meta["source_model"] == "qat"
    else:
        assert meta["quantization"] is None and meta["source_model"] == "fp32"


def test_tensor_input_option(tmp_path, small_model, packages, target):
    out = tmp_path / "coreml-fp16"
    target.export(make_job(small_model, "fp16", out, options={"coreml_input": "tensor"}))
    facts = target.inspect(out)
    assert facts["inputs"] == [{"name": "input", "kind": "multiArrayType",
                                "shape": [1, 3, 64, 64], "dtype": "float32"}]
    # The image package carries one more mul: Core ML's 1/255 pixel scale, ahead of
    # the graph's own (x - mean) * (1/std).
    image_ops = target.inspect(packages["fp16"])["mil_ops"]
    assert image_ops["mul"] == facts["mil_ops"]["mul"] + 1
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["input"]["layout"] == "NCHW" and meta["input"]["dtype"] == "float32"


def test_failed_export_leaves_nothing(tmp_path, model, target):
    class Broken(torch.nn.Module):
        cfg = model.cfg

        def forward(self, x):
            raise RuntimeError("deliberate failure inside forward")

    out = tmp_path / "coreml-fp16"
    with pytest.raises(ExportError, match="deliberate failure"):
        target.export(ExportJob(model=Broken().eval(), precision="fp16", out_dir=out, metadata={}))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_choices(tmp_path, model, target):
    with pytest.raises(ConfigError, match="fp16"):
        target.export(make_job(model, "bf16", tmp_path / "a"))
    with pytest.raises(ConfigError, match="image"):
        target.export(make_job(model, "fp16", tmp_path / "b", options={"coreml_input": "nchw"}))


def test_failure_while_writing_leaves_nothing(tmp_path, model, packages, target, monkeypatch):
    """A failure after the package is saved (inside the staging folder) removes it."""
    import converters.coreml as mod

    # Skip the conversion: reuse a converted program, then fail at metadata.json.
    done = ct.models.MLModel(str(packages["fp16"] / "model.mlpackage"), skip_model_load=True)
    monkeypatch.setattr(mod, "_convert", lambda *a, **k: (done, {"input": "input", "output": "output"}))

    def fail(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(mod, "write_json", fail)
    out = tmp_path / "coreml-fp16"
    with pytest.raises(ExportError, match="disk full"):
        target.export(make_job(model, "fp16", out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


_EXPORT_ONE = """
import sys, torch
from converters.coreml import CoreMLTarget
from converters.base import ExportJob
from converters.metadata import base_metadata
from hrnet_edge import create_model
torch.manual_seed(0)
m = create_model("hrnet_w8_pose", input_size=(64, 64), width=4, stem_channels=8, stage1_blocks=1,
                 stage1_planes=4, stage_modules=[1, 1, 1], stage_blocks=[1, 1, 1], head_channels=8).eval()
CoreMLTarget().export(ExportJob(model=m, precision="fp16", out_dir=__import__("pathlib").Path(sys.argv[1]),
                                metadata=base_metadata(m)))
"""


def test_same_model_same_package_bytes(tmp_path):
    """Two exports in two processes with different string-hash seeds (coremltools writes
    protobuf maps in hash order and random Manifest UUIDs): every file equal but the
    export time, no stray file in the package, and the package still opens."""
    import os
    import subprocess
    import sys

    ct = pytest.importorskip("coremltools")
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}" / "coreml-fp16"
        done = subprocess.run([sys.executable, "-c", _EXPORT_ONE, str(out)], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr[-3000:]
        outs.append(out)
    files = [sorted(p.relative_to(o).as_posix() for p in o.rglob("*") if p.is_file()) for o in outs]
    assert files[0] == files[1] and "model.mlpackage/executorch_debug_handle_mapping.json" not in files[0]
    differ = [f for f in files[0] if (outs[0] / f).read_bytes() != (outs[1] / f).read_bytes()]
    # The export time may round to the same 0.01 s in both runs: only that file may differ.
    assert set(differ) <= {"timings.json"}, differ
    assert all("export_seconds" in json.loads((o / "timings.json").read_text()) for o in outs)
    spec = ct.models.MLModel(str(outs[0] / "model.mlpackage"), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram" and spec.description.input[0].name
