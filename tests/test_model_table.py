"""The recorded params/GFLOPs table is true, and matches the HRNet papers."""
from __future__ import annotations

import pytest
import torch

from hrnet_edge import count_macs, count_params, create_model, get_config, list_models
from hrnet_edge.models.registry import GFLOP, model_stats, recorded_stats
from torch import nn


@pytest.mark.parametrize("name", list_models())
def test_recorded_stats_are_recomputed_exactly(name):
    row = recorded_stats()[name]
    s = model_stats(name)
    assert row["params"] == s["params"]
    assert row["macs"] == s["macs"]
    assert tuple(row["input_size"]) == get_config(name).input_size


PUBLISHED = [n for n in list_models() if get_config(n).published_params_m is not None]


def test_published_rows_cover_the_papers():
    # pose W32/W48, classification on every published width, segmentation W48/small
    assert len(PUBLISHED) == 11


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_variants_match_papers(name):
    cfg = get_config(name)
    row = recorded_stats()[name]
    params_m, gflops = row["params"] / 1e6, row["macs"] / GFLOP
    # within 1% of the paper, or within the rounding of the printed figure (1.5M is 1.45-1.55)
    assert abs(params_m - cfg.published_params_m) <= max(0.01 * cfg.published_params_m, 0.05), params_m
    assert abs(gflops - cfg.published_gflops) <= 0.03 * cfg.published_gflops, gflops


def test_mac_counter_known_answer():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1, stride=2),
                        nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    macs = count_macs(net, (16, 16))
    assert macs == 16 * 16 * 8 * 27 + 8 * 8 * 4 * 8 + 256 * 10
    assert count_params(net) == 8 * 27 + 8 + 4 * 8 + 4 + 2570


def test_counting_leaves_the_model_untouched():
    model = create_model("hrnet_w8_pose", input_size=(64, 64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"
