"""Published weights into hrnet-edge: timm's models give the same outputs once mapped,
the official pose and segmentation layouts are covered key by key and shape by shape,
and bad files raise typed errors. No network: the timm models have random weights and
the official key lists are data (tests/data/official_hrnet_keys.json)."""
from __future__ import annotations

import contextlib
import enum
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hrnet_edge import create_model
from hrnet_edge.errors import CheckpointError, ConfigError
from hrnet_edge.weights import (
    WeightsError, WeightsMismatch, detect_source, get_map, load_weights, map_state, read_state_dict,
)

OFFICIAL = json.loads((Path(__file__).parent / "data" / "official_hrnet_keys.json").read_text())["models"]
TIMM_WIDTHS = get_map("timm").widths  # hrnet-edge width -> timm model name
TOL = 1e-5

# --- timm without torchvision -------------------------------------------------------
# `import timm` imports torchvision (timm.layers takes FrozenBatchNorm2d from
# torchvision.ops.misc; timm.data builds its transforms on torchvision.transforms), and no
# torchvision build for this CPU torch exists (docs: TOOLCHAIN.md). timm is installed
# without its dependencies (scripts/setup.sh) and, only while `import timm` runs, these
# module names resolve to empty stand-ins whose every attribute is a class that raises
# when used. timm's HRNet code uses none of them; the stand-ins leave sys.modules
# afterwards, so nothing else can import them.
_STUB_MODULES = ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
                 "torchvision.transforms.functional", "torchvision.datasets", "torchvision.models",
                 "torchvision.models.feature_extraction", "torchvision.utils")
# The one torchvision name timm reads at import time: members of an enum (its mode names).
_INTERPOLATION = enum.Enum("InterpolationMode", {n: n.lower() for n in (
    "NEAREST", "BILINEAR", "BICUBIC", "BOX", "HAMMING", "LANCZOS")})


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name in _STUB_MODULES:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if module.__name__ == "torchvision.transforms.functional":
            module.InterpolationMode = _INTERPOLATION

        def attr(name, _mod=module.__name__):
            if name.startswith("__"):
                raise AttributeError(name)

            def refuse(*_a, **_k):
                raise RuntimeError(f"{_mod}.{name} is a stand-in (no torchvision here); timm's HRNet needs none")

            return type(name, (), {"__init__": refuse, "__call__": refuse})

        module.__getattr__ = attr


@contextlib.contextmanager
def _torchvision_stand_in():
    finder = _TorchvisionStandIn()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def timm():
    if "timm" in sys.modules:
        return sys.modules["timm"]
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (scripts/setup.sh installs timm==1.0.31 without its dependencies)")
    with _torchvision_stand_in():
        return importlib.import_module("timm")


def test_torchvision_stand_in_is_gone_after_import(timm):
    assert not any(m == "torchvision" or m.startswith("torchvision.") for m in sys.modules)
    with pytest.raises(ImportError):
        importlib.import_module("torchvision")


# --- timm: equal outputs ---------------------------------------------------------------
def _settle(model: nn.Module, seed: int) -> None:
    """Random BN affine parameters and running statistics taken from one batch, so every
    layer's output is of unit scale (fresh BN statistics would let activations grow
    through the depth and hide a wrong mapping in float rounding)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
            m.momentum = None  # cumulative: the running stats become this batch's
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64, generator=g))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


def _stage_outputs(model: nn.Module, names: list[str]) -> tuple[list, list]:
    outs: list = []
    hooks = [model.get_submodule(n).register_forward_hook(lambda _m, _i, o: outs.append(o)) for n in names]
    return outs, hooks


@pytest.mark.parametrize("width", list(TIMM_WIDTHS))
def test_timm_weights_give_the_same_logits_and_stage_features(timm, width, tmp_path):
    torch.manual_seed(0)
    src = timm.create_model(TIMM_WIDTHS[width], pretrained=False)
    _settle(src, seed=1)
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    # timm takes normalized input; hrnet-edge's normalization is switched off to compare
    model = create_model(f"hrnet_{width}_cls", normalize_in_graph=False).eval()
    report = load_weights(model, path)
    assert report.source == "timm" and report.loaded > 0 and not report.skipped

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    theirs, h1 = _stage_outputs(src, ["layer1", "stage2", "stage3", "stage4"])
    ours, h2 = _stage_outputs(model, ["backbone.layer1", "backbone.stages.0", "backbone.stages.1",
                                      "backbone.stages.2"])
    with torch.no_grad():
        a, b = src(x), model(x)
    for h in h1 + h2:
        h.remove()
    assert a.shape == b.shape == (2, 1000)
    assert (a - b).abs().max().item() <= TOL, "logits differ"
    assert a.abs().max().item() > 0.1  # a real signal, not two zero tensors
    flat = lambda outs: [t for o in outs for t in (o if isinstance(o, list) else [o])]  # noqa: E731
    ta, tb = flat(theirs), flat(ours)
    assert len(ta) == len(tb) == 1 + 2 + 3 + 4
    for i, (p, q) in enumerate(zip(ta, tb)):
        assert p.shape == q.shape, f"feature {i}"
        assert (p - q).abs().max().item() <= TOL, f"feature {i} differs"


def test_timm_backbone_into_other_heads(timm, tmp_path):
    torch.manual_seed(0)
    src = timm.create_model("hrnet_w18_small", pretrained=False)
    _settle(src, seed=3)
    path = tmp_path / "w18s.pth"
    torch.save(src.state_dict(), path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = src.stages(src.act2(src.bn2(src.conv2(src.act1(src.bn1(src.conv1(x)))))))
    for task in ("seg", "det", "cls", "pose"):
        model = create_model(f"hrnet_w18_small_v1_{task}", normalize_in_graph=False, num_outputs=7).eval()
        head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
        report = load_weights(model, path, parts=("backbone",))
        assert report.skipped, "the classification head's tensors are left out"
        for k, v in model.head.state_dict().items():
            assert torch.equal(v, head_before[k]), f"{task}: head {k} changed"
        with torch.no_grad():
            got = model.backbone(x)
        # the V1 pose backbone builds only the high-resolution output of its last module
        for a, b in zip(want, got):
            assert (a - b).abs().max().item() <= TOL, task
        if task == "pose":
            assert len(got) == 1 and any(".fuse.1." in k for k in report.skipped)


def test_timm_head_with_other_class_count_is_a_shape_error(timm, tmp_path):
    src = timm.create_model("hrnet_w18_small", pretrained=False)
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = create_model("hrnet_w18_small_v1_cls", num_outputs=10)
    with pytest.raises(WeightsMismatch) as info:
        load_weights(model, path)
    assert [k for k, _, _ in info.value.shapes] == ["head.fc.bias", "head.fc.weight"]
    assert "head.fc.weight: file [1000, 2048] vs model [10, 2048]" in str(info.value)
    load_weights(model, path, parts=("backbone",))  # the backbone alone fits


# --- official layouts: every key and shape ---------------------------------------------
OFFICIAL_TARGETS = {
    "pose_hrnet_w32": ("hrnet_w32_pose", {}),
    "pose_hrnet_w48": ("hrnet_w48_pose", {}),
    "seg_hrnet_w48_cityscapes": ("hrnet_w48_seg", {}),
    "seg_hrnet_w18_small_v1_cityscapes": ("hrnet_w18_small_v1_seg", {}),
    "seg_hrnet_w18_small_v2_cityscapes": ("hrnet_w18_small_v2_seg", {}),
}


def _fake_state(name: str, device: str = "meta") -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device=device) for k, shape in OFFICIAL[name].items()}


@pytest.mark.parametrize("official", list(OFFICIAL_TARGETS))
def test_official_map_covers_every_key_and_shape(official):
    variant, overrides = OFFICIAL_TARGETS[official]
    source = official.split("_", 1)[0]
    state = _fake_state(official)
    assert detect_source(state) == source
    mapped, unmatched = map_state(state, get_map(source))
    assert unmatched == []
    with torch.device("meta"):
        model = create_model(variant, **overrides)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    folded = 1 if source == "seg" else 0  # last_layer.0.bias goes into the BN
    assert len(mapped) == len(state) - folded, "two source keys map to one name"
    assert set(mapped) == set(target)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == target


def test_official_pose_checkpoint_loads_its_values(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randint(0, 9, shape, generator=g) if k.endswith("num_batches_tracked")
                 else torch.randn(shape, generator=g))
             for k, shape in OFFICIAL["pose_hrnet_w32"].items()}
    # releases made with older PyTorch carry no BN batch counters
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pose_hrnet_w32_256x192.pth"
    torch.save(state, path)
    model = create_model("hrnet_w32_pose")
    report = load_weights(model, path)
    assert report.source == "pose" and report.loaded == len(state) and report.notes == []
    ours = model.state_dict()
    assert torch.equal(ours["head.final.weight"], state["final_layer.weight"])
    assert torch.equal(ours["backbone.stages.2.2.fuse.0.3.op.0.0.weight"], state["stage4.2.fuse_layers.0.3.0.weight"])
    assert torch.equal(ours["backbone.stages.1.3.fuse.2.0.op.1.1.running_var"],
                       state["stage3.3.fuse_layers.2.0.1.1.running_var"])
    assert torch.equal(ours["backbone.transitions.2.layers.3.0.weight"], state["transition3.3.0.0.weight"])


def test_official_seg_release_layout_loads_with_its_prefix_and_bias_folded(tmp_path):
    g = torch.Generator().manual_seed(0)
    plain = {k: torch.randn(s, generator=g) if not k.endswith("num_batches_tracked") else torch.tensor(5)
             for k, s in OFFICIAL["seg_hrnet_w18_small_v1_cityscapes"].items()}
    plain = {k: v.abs() + 0.1 if k.endswith("running_var") else v for k, v in plain.items()}
    # as the release saves it: the model under "model.", the loss's class weights beside it
    release = {f"model.{k}": v for k, v in plain.items()} | {"loss.criterion.weight": torch.rand(19)}
    path = tmp_path / "hrnet_w18_small_v1_cityscapes.pth"
    torch.save({"state_dict": release}, path)
    model = create_model("hrnet_w18_small_v1_seg", normalize_in_graph=False).eval()
    report = load_weights(model, path)
    assert report.source == "seg"
    assert any("upsample_mode = 'bilinear'" in n for n in report.notes)  # the model has 'nearest'
    ours = model.state_dict()
    assert torch.equal(ours["head.classifier.weight"], plain["last_layer.3.weight"])
    assert torch.allclose(ours["head.mix.1.running_mean"],
                          plain["last_layer.1.running_mean"] - plain["last_layer.0.bias"])
    # folding is exact in function: conv with bias then BN == conv without bias then BN(mean - bias)
    c = plain["last_layer.0.weight"].shape[0]  # 16 + 32 + 64 + 128
    z = torch.randn(2, c, 4, 4)
    conv = nn.Conv2d(c, c, 1)
    conv.weight.data, conv.bias.data = plain["last_layer.0.weight"], plain["last_layer.0.bias"]
    bn = nn.BatchNorm2d(c).eval()
    for n in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, n).data = plain[f"last_layer.1.{n}"]
    with torch.no_grad():
        ref = bn(conv(z))  # random weights of unit scale: outputs up to ~100, so float32 rounding
        assert (ref - model.head.mix[:2](z)).abs().max().item() <= 1e-6 * ref.abs().max().item()


def test_own_checkpoint_round_trips(tmp_path):
    from hrnet_edge.training.checkpoint import save_checkpoint

    src = create_model("hrnet_w8_seg", input_size=(64, 64))
    path = save_checkpoint(tmp_path / "best.safetensors", src, {"epoch": 1},
                           torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9))
    dst = create_model("hrnet_w8_seg", input_size=(64, 64))
    assert load_weights(dst, path).source == "hrnet-edge"
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


# --- typed errors ------------------------------------------------------------------------
@pytest.fixture()
def small_model():
    return create_model("hrnet_w8_cls", input_size=(64, 64))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_missing_and_garbage_files_are_weights_errors(small_model, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(small_model, tmp_path / "nope.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        load_weights(small_model, bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x04garbage")
    with pytest.raises(WeightsError, match="weights_only"):
        read_state_dict(junk)
    other = tmp_path / "w.npz"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown suffix"):
        read_state_dict(other)
    assert issubclass(WeightsError, CheckpointError)


class _NotAWeight:
    pass


def test_pickles_that_need_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _NotAWeight()}, path)
    with pytest.raises(WeightsError, match="weights_only"):
        read_state_dict(path)
    path2 = tmp_path / "meta.pth"
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, path2)
    with pytest.raises(WeightsError, match=r"1 entries are not tensors \[epoch\]"):
        read_state_dict(path2)


def test_mismatch_names_missing_unexpected_and_shapes_and_loads_nothing(small_model, tmp_path):
    from safetensors.torch import save_file

    state = {k: torch.randn(s) for k, s in OFFICIAL["pose_hrnet_w32"].items() if not k.endswith("tracked")}
    del state["stage2.0.branches.1.3.bn2.running_var"]
    state["stage9.0.odd.weight"] = torch.zeros(3)
    path = tmp_path / "w32.safetensors"
    save_file(state, str(path))
    model = create_model("hrnet_w32_pose")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatch) as info:
        load_weights(model, path)
    err = info.value
    assert err.missing == ["backbone.stages.0.0.branches.1.3.conv2.1.running_var"]
    assert err.unexpected == ["stage9.0.odd.weight"]
    assert err.shapes == []
    assert "1 missing [backbone.stages.0.0.branches.1.3.conv2.1.running_var]" in str(err)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # another width: shapes differ, named with both shapes
    with pytest.raises(WeightsMismatch) as info:
        load_weights(small_model, path, parts=("backbone",), source="pose")
    assert info.value.shapes[0] == ("backbone.layer1.0.conv1.0.weight", (64, 64, 1, 1), (16, 32, 1, 1))
    assert "backbone.layer1.0.conv1.0.weight: file [64, 64, 1, 1] vs model [16, 32, 1, 1]" in str(info.value)


def test_unknown_layout_part_source_and_changed_hash(small_model, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"encoder.weight": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="the layout is none of"):
        load_weights(small_model, path)
    with pytest.raises(ConfigError, match="unknown weights part"):
        load_weights(small_model, path, parts=("neck",))
    with pytest.raises(ConfigError, match="unknown weights source"):
        load_weights(small_model, path, source="detectron")
    with pytest.raises(WeightsError, match="changed since the run recorded it"):
        load_weights(small_model, path, sha256="0" * 64)


# --- run configuration: [model] init ------------------------------------------------------
def test_model_init_is_recorded_with_its_hash_and_loaded_by_training(tmp_path):
    from hrnet_edge.io import sha256_file
    from hrnet_edge.runconfig import run_config_from_dict
    from hrnet_edge.training.checkpoint import save_checkpoint

    src = create_model("hrnet_w8_cls", input_size=(64, 64), num_outputs=3)
    weights = save_checkpoint(tmp_path / "w.safetensors", src, {"epoch": 1})
    cfg = run_config_from_dict({"model": {"name": "hrnet_w8_cls", "init": str(weights), "init_parts": ["backbone"]},
                                "model_overrides": {"input_size": [64, 64], "num_outputs": 3}})
    assert cfg.model == "hrnet_w8_cls"
    assert cfg.init.sha256 == sha256_file(weights) and cfg.init.parts == ("backbone",)
    assert cfg.to_dict()["init"]["sha256"] == cfg.init.sha256  # what config.json records
    again = run_config_from_dict(json.loads(json.dumps(cfg.to_dict())))  # config.json read back
    assert again == cfg
    weights.write_bytes(weights.read_bytes() + b" ")  # the file changes after the run recorded it
    with pytest.raises(ConfigError, match="changed since the run recorded it"):
        run_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    with pytest.raises(ConfigError, match="valid parts"):
        run_config_from_dict({"model": "hrnet_w8_cls", "init": {"path": str(weights), "parts": ["neck"]}})
    with pytest.raises(ConfigError, match=r"\[model\] takes"):
        run_config_from_dict({"model": {"name": "hrnet_w8_cls", "weights": "x"}})
