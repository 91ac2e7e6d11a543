"""The convolutional building blocks of HRNet."""
from __future__ import annotations

from torch import nn
import torch.nn.functional as F


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

    def forward(self, x):
        return F.interpolate(
            x, scale_factor=float(self.scale), mode=self.mode, align_corners=self.align_corners
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode}, align_corners={self.align_corners}"


def resize_to(x, size, mode: str, align_corners: bool):
    """Resize ``x`` to a static spatial ``size`` (ints, so exporters see constants)."""
    ac = align_corners if mode == "bilinear" else None
    return F.interpolate(x, size=size, mode=mode, align_corners=ac)
