"""Model registry: build variants by name, list them, count params and FLOPs."""
from __future__ import annotations

import copy
import fnmatch
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrnet_edge.config import VARIANTS, ModelConfig, get_config
from hrnet_edge.models.hrnet import HRNet


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered variant names matching a glob ``pattern`` (and ``task``), sorted."""
    return sorted(
        n for n, c in VARIANTS.items()
        if fnmatch.fnmatch(n, pattern) and (task is None or c.task == task)
    )


def create_model(name: str | ModelConfig, **overrides: Any) -> HRNet:
    """Build variant ``name`` (or a ModelConfig) with optional config overrides.

    Raises:
        ConfigError: unknown name or override key, with the valid choices.
    """
    cfg = name if isinstance(name, ModelConfig) else get_config(name, **overrides)
    return HRNet(cfg)


def count_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm affine included, buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int] | None = None) -> int:
    """Multiply-accumulates of convolutions and linear layers for one image.

    This is what the HRNet papers count as "FLOPs": BatchNorm, activations,
    additions and resizing are not counted. Shapes are propagated on the ``meta``
    device, so even the 1024x2048 segmentation variants count in milliseconds.
    """
    if input_size is None:
        input_size = model.cfg.input_size  # type: ignore[attr-defined]
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() // out.shape[0] * k

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    model = copy.deepcopy(model).to("meta").eval()
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        model(torch.zeros(1, 3, *input_size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total


# The HRNet papers' tool divides multiply-adds by 1024**3 and calls the result GFLOPs;
# we follow it so the published figures compare like for like.
GFLOP = 1024**3


def model_stats(name: str, **overrides: Any) -> dict[str, Any]:
    """Params (M) and GFLOPs (multiply-adds / 1024**3, the papers' unit) of a variant
    at its default input size. The model is built on the meta device (no memory)."""
    with torch.device("meta"):
        model = create_model(name, **overrides)
    cfg = model.cfg
    params, macs = count_params(model), count_macs(model)
    return {
        "name": cfg.name,
        "task": cfg.task,
        "params": params,
        "macs": macs,
        "params_m": params / 1e6,
        "gflops": macs / GFLOP,
        "input_size": cfg.input_size,
        "published_params_m": cfg.published_params_m,
        "published_gflops": cfg.published_gflops,
    }


TABLE_PATH = Path(__file__).with_name("model_table.json")


def recorded_stats() -> dict[str, dict[str, Any]]:
    """The params and multiply-adds recorded for every variant (read, not computed).

    ``tests/test_model_table.py`` recomputes every row, so the record cannot drift
    from the code; ``hrnet-edge models --recompute`` rewrites it after a change.
    """
    return json.loads(TABLE_PATH.read_text())


def compute_table() -> dict[str, dict[str, Any]]:
    """Recompute params and MACs of every registered variant (on the meta device)."""
    table = {}
    for name in list_models():
        s = model_stats(name)
        table[name] = {"params": s["params"], "macs": s["macs"], "input_size": list(s["input_size"])}
    return table
