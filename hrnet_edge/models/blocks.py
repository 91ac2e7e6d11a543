"""The convolutional building blocks of HRNet."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
import torch.nn.functional as F

from hrnet_edge.config import UPSAMPLE_FORMS
from hrnet_edge.errors import unknown_choice

# How a nearest upsampling is written into an exported graph. "interpolate" is the
# resize op every tool knows (TFLite RESIZE_NEAREST_NEIGHBOR, aten.upsample_nearest2d),
# which XNNPACK does not take: the graph splits into several delegate partitions.
# "broadcast" writes the same values as a reshape to 6-D, a multiply by a constant of
# ones and a reshape back, ops XNNPACK delegates in FP32 and INT8 (one partition).
# (UPSAMPLE_FORMS lives in hrnet_edge.config, which the run configuration reads without torch.)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_bn(cin, planes, 3, stride)
        self.conv2 = conv_bn(planes, cout, 3, relu=False)
        self.shortcut = (
            conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (expansion 4) with a residual connection."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_bn(cin, planes, 1)
        self.conv2 = conv_bn(planes, planes, 3, stride)
        self.conv3 = conv_bn(planes, cout, 1, relu=False)
        self.shortcut = (
            conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class Upsample(nn.Module):
    """Fixed-factor upsampling whose mode is a config field (export-relevant)."""

    def __init__(self, scale: int, mode: str, align_corners: bool = False):
        super().__init__()
        self.scale = scale
        self.mode = mode
        self.align_corners = align_corners if mode == "bilinear" else None
        self.form = "interpolate"
        if mode == "nearest":  # not in the state dict: checkpoints are unchanged
            self.register_buffer("ones", torch.ones(1, 1, 1, scale, 1, scale), persistent=False)

    def forward(self, x):
        if self.form == "broadcast" and self.mode == "nearest":
            n, c, h, w = x.shape
            s = self.scale
            return (x.reshape(n, c, h, 1, w, 1) * self.ones).reshape(n, c, h * s, w * s)
        return F.interpolate(
            x, scale_factor=float(self.scale), mode=self.mode, align_corners=self.align_corners
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode}, align_corners={self.align_corners}"


@contextmanager
def upsample_form(model: nn.Module, form: str) -> Iterator[int]:
    """Write every nearest :class:`Upsample` of ``model`` in ``form`` (see
    ``UPSAMPLE_FORMS``) while the block runs; yields how many modules changed. The
    values are identical in either form (bit-exact: a product with 1.0).

    Raises:
        ConfigError: an unknown form.
    """
    if form not in UPSAMPLE_FORMS:
        raise unknown_choice("upsample form", form, UPSAMPLE_FORMS)
    mods = [m for m in model.modules() if isinstance(m, Upsample) and m.mode == "nearest"]
    before = [m.form for m in mods]
    for m in mods:
        m.form = form
    try:
        yield len(mods)
    finally:
        for m, f in zip(mods, before):
            m.form = f


def resize_to(x, size, mode: str, align_corners: bool):
    """Resize ``x`` to a static spatial ``size`` (ints, so exporters see constants)."""
    ac = align_corners if mode == "bilinear" else None
    return F.interpolate(x, size=size, mode=mode, align_corners=ac)
