"""The HRNet family: registry, shapes, gradients, overrides, torch.export."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hrnet_edge import create_model, get_config, list_models
from hrnet_edge.config import EDGE_WIDTHS, PUBLISHED_WIDTHS, TASKS, WIDTHS
from hrnet_edge.errors import ConfigError
from hrnet_edge.models.backbone import ExchangeModule


def expected_shape(cfg, h, w, batch=2):
    if cfg.task in ("pose", "seg"):
        return (batch, cfg.num_outputs, h // 4, w // 4)
    if cfg.task == "det":
        points = sum((h // (4 * 2**i)) * (w // (4 * 2**i)) for i in range(cfg.det_levels))
        return (batch, points, 5 + cfg.num_outputs)
    return (batch, cfg.num_outputs)


def test_registry_has_every_width_and_head():
    names = set(list_models())
    assert len(names) == len(WIDTHS) * len(TASKS)
    for width in (*PUBLISHED_WIDTHS, *EDGE_WIDTHS):
        for task in TASKS:
            assert f"hrnet_{width}_{task}" in names
    assert list_models("*w18_small*", task="seg") == ["hrnet_w18_small_v1_seg", "hrnet_w18_small_v2_seg"]


@pytest.mark.parametrize("name", list_models())
def test_every_name_builds(name):
    with torch.device("meta"):  # full widths without allocating their weights
        model = create_model(name)
    assert model.cfg.name == name
    chans = model.cfg.backbone.branch_channels
    assert chans == tuple(model.cfg.backbone.width * 2**i for i in range(4))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size", [(64, 64), (128, 96), (96, 160)])
def test_head_shapes_tiny(task, size):
    model = create_model(f"hrnet_w8_{task}", input_size=size, num_outputs=5).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert tuple(out.shape) == expected_shape(model.cfg, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("task", TASKS)
def test_gradients_reach_every_branch(task):
    model = create_model(f"hrnet_w8_{task}", input_size=(64, 64), num_outputs=3)
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    out.float().pow(2).mean().backward()
    # every parameter that takes part in the forward pass gets a gradient
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    # each branch of the last exchange module carries a nonzero gradient
    last = [m for m in model.modules() if isinstance(m, ExchangeModule)][-1]
    for i, branch in enumerate(last.branches):
        g = sum(p.grad.abs().sum() for p in branch.parameters())
        assert g > 0, f"branch {i} gets no gradient"


def _last_fuse(model):
    return [m for m in model.modules() if isinstance(m, ExchangeModule)][-1].fuse


def test_pose_heads_v1_and_v2():
    # The papers' widths: V1, the last fusion builds only the high-resolution output.
    w32 = create_model("hrnet_w32_pose")
    assert w32.cfg.pose_head == "v1" and len(_last_fuse(w32)) == 1
    assert w32.head.final.in_channels == 32
    # The edge widths read all four streams (8+16+32+64 channels for W8): from 8
    # channels alone, 17 heatmaps would be confined to an 8-dimensional space.
    w8 = create_model("hrnet_w8_pose")
    assert w8.cfg.pose_head == "v2" and len(_last_fuse(w8)) == 4
    assert w8.head.final.in_channels == 120
    w8v1 = create_model("hrnet_w8_pose", pose_head="v1")
    assert len(_last_fuse(w8v1)) == 1 and w8v1.head.final.in_channels == 8
    x = torch.rand(1, 3, 64, 64)
    assert w8(x).shape == w8v1(x).shape == (1, 17, 16, 16)
    assert len(_last_fuse(create_model("hrnet_w8_seg"))) == 4  # V2: all four streams
    with pytest.raises(ConfigError, match="pose_head"):
        get_config("hrnet_w8_pose", pose_head="v3")


def test_det_tower_depth():
    """The edge widths' detection towers have one conv + BatchNorm + ReLU, the papers'
    widths two; the field sets it for any width and is checked."""
    w8 = create_model("hrnet_w8_det", head_channels=16)
    assert w8.cfg.det_tower_convs == 1
    assert [len(t) for t in w8.head.towers] == [1] * w8.cfg.det_levels
    w8x3 = create_model("hrnet_w8_det", head_channels=16, det_tower_convs=3)
    assert [len(t) for t in w8x3.head.towers] == [3] * w8.cfg.det_levels
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # per level, two more bias-free 3x3 convs (16 -> 16) and their BatchNorms' weight and bias
    assert params(w8x3) - params(w8) == w8.cfg.det_levels * 2 * (16 * 16 * 9 + 2 * 16)
    x = torch.rand(1, 3, 64, 64)
    assert w8(x).shape == w8x3(x).shape
    assert get_config("hrnet_w18_det").det_tower_convs == 2
    for bad in (0, 5):
        with pytest.raises(ConfigError, match="det_tower_convs"):
            get_config("hrnet_w8_det", det_tower_convs=bad)


def test_overrides_replace_and_do_not_leak():
    base = get_config("hrnet_w8_pose")
    cfg = get_config("hrnet_w8_pose", width=12, input_size=(128, 96), upsample_mode="bilinear")
    assert cfg.backbone.width == 12 and cfg.input_size == (128, 96)
    assert cfg.backbone.upsample_mode == "bilinear"
    assert get_config("hrnet_w8_pose") == base  # the shared table is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.task = "seg"  # type: ignore[misc]


@pytest.mark.parametrize("overrides, match", [
    ({"widht": 8}, "widht"),
    ({"upsample_mode": "cubic"}, "nearest"),
    ({"input_size": (100, 96)}, "multiples of 32"),
    ({"task": "depth"}, "pose"),
    ({"stage_blocks": (1, 2)}, "a list of 3 integers"),
])
def test_bad_overrides_raise_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        create_model("hrnet_w8_pose", **overrides)


def test_unknown_name_suggests():
    with pytest.raises(ConfigError, match="hrnet_w8_pose"):
        create_model("hrnet_w8_pse")


def test_upsample_mode_reaches_the_graph():
    nearest = create_model("hrnet_w8_pose", input_size=(64, 64)).eval()
    bilinear = create_model("hrnet_w8_pose", input_size=(64, 64), upsample_mode="bilinear").eval()
    bilinear.load_state_dict(nearest.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(nearest(x), bilinear(x))
    modes = {m.mode for m in bilinear.modules() if type(m).__name__ == "Upsample"}
    assert modes == {"bilinear"}


def _structure(cfg) -> tuple:
    """Everything that shapes a variant's graph except its channel counts: variants
    with equal structures trace to the same ops, only with other channel numbers (the
    default input size is left out too: the export below uses its own)."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if f.name not in ("name", "width_name", "input_size", "published_params_m", "published_gflops")}
    fields["backbone"] = dataclasses.replace(cfg.backbone, width=0)
    return tuple(sorted((k, repr(v)) for k, v in fields.items()))


def _export_groups() -> dict[tuple, list[str]]:
    """Variants grouped by structure, each group sorted by parameter count."""
    groups: dict[tuple, list[str]] = {}
    for name in list_models():
        groups.setdefault(_structure(get_config(name)), []).append(name)
    return {k: sorted(v, key=lambda n: get_config(n).backbone.width) for k, v in groups.items()}


def test_export_groups_cover_every_variant_and_head():
    groups = _export_groups()
    assert sorted(n for names in groups.values() for n in names) == sorted(list_models())
    # the papers' W18/W32/W40/W48 share one structure per head; the small and edge
    # widths each have their own; every head is in every width family's export
    assert len(groups) == len(TASKS) * 5, [v for v in groups.values()]
    for task in TASKS:
        assert [v for v in groups.values() if v[0] == f"hrnet_w18_{task}"] == \
            [[f"hrnet_{w}_{task}" for w in ("w18", "w32", "w40", "w48")]]


@pytest.mark.parametrize("names", list(_export_groups().values()), ids=lambda v: "+".join(v))
def test_torch_export_every_structure(names):
    """One torch.export per structure (the narrowest member): the graph does not
    depend on the channel counts, so the wider members of a group trace the same ops.
    The input is small for speed; the structure does not depend on it either."""
    model = create_model(names[0], input_size=(64, 64)).eval()
    x = torch.rand(1, 3, 64, 64)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x))
    ops = {n.target for n in ep.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.conv2d.default in ops


def test_upsample_forms_give_identical_outputs():
    """The broadcast form (reshape x ones, which XNNPACK delegates) is the nearest
    upsampling bit for bit; the state dict does not change; an unknown form is refused."""
    from hrnet_edge.errors import ConfigError
    from hrnet_edge.models.blocks import upsample_form

    torch.manual_seed(0)
    model = create_model("hrnet_w8_pose").eval()
    x = torch.rand(2, 3, *model.cfg.input_size)
    keys = set(model.state_dict())
    with torch.no_grad():
        ref = model(x)
        with upsample_form(model, "broadcast") as n:
            out = model(x)
    assert n == 10 and torch.equal(out, ref)
    assert {m.form for m in model.modules() if hasattr(m, "form")} == {"interpolate"}
    assert set(model.state_dict()) == keys
    with pytest.raises(ConfigError, match="interpolate"):
        with upsample_form(model, "pixelshuffle"):
            pass


def test_run_config_checks_upsample_form():
    from hrnet_edge.errors import ConfigError
    from hrnet_edge.runconfig import run_config_from_dict

    assert run_config_from_dict({"export": {"upsample_form": "broadcast"}}).export.upsample_form == "broadcast"
    with pytest.raises(ConfigError, match="upsample_form"):
        run_config_from_dict({"export": {"upsample_form": "nearest"}})
