"""The four HRNet heads: V1 pose, V2 segmentation, V2p detection, classification."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hrnet_edge.models.blocks import Bottleneck, conv_bn, resize_to


class PoseHead(nn.Module):
    """HRNetV1: keypoint heatmaps from the high-resolution branch (stride 4)."""

    def __init__(self, channels: tuple[int, ...], num_keypoints: int):
        super().__init__()
        self.final = nn.Conv2d(channels[0], num_keypoints, 1)

    def forward(self, xs):
        return self.final(xs[0])


class PoseHeadV2(nn.Module):
    """Keypoint heatmaps from the HRNetV2 representation: all streams upsampled to
    stride 4, concatenated, one 1x1 conv. Used by the edge widths, whose single
    high-resolution stream is too narrow for 17 independent heatmaps."""

    def __init__(self, channels: tuple[int, ...], num_keypoints: int, mode: str, align_corners: bool):
        super().__init__()
        self.concat = ConcatUp(mode, align_corners)
        self.final = nn.Conv2d(sum(channels), num_keypoints, 1)

    def forward(self, xs):
        return self.final(self.concat(xs))


class ConcatUp(nn.Module):
    """HRNetV2 representation: every branch upsampled to the highest resolution and
    concatenated along channels."""

    def __init__(self, mode: str, align_corners: bool):
        super().__init__()
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, xs):
        h, w = int(xs[0].shape[-2]), int(xs[0].shape[-1])
        ups = [xs[0]] + [resize_to(x, (h, w), self.mode, self.align_corners) for x in xs[1:]]
        return torch.cat(ups, dim=1)


class SegHead(nn.Module):
    """HRNetV2 segmentation: concat, 1x1 conv mix (BN, ReLU), 1x1 per-pixel classifier.

    Logits come out at stride 4; callers upsample bilinearly to the label size.
    """

    def __init__(self, channels: tuple[int, ...], num_classes: int, mode: str, align_corners: bool):
        super().__init__()
        total = sum(channels)
        self.concat = ConcatUp(mode, align_corners)
        self.mix = conv_bn(total, total, 1)
        self.classifier = nn.Conv2d(total, num_classes, 1)

    def forward(self, xs):
        return self.classifier(self.mix(self.concat(xs)))


class DetHead(nn.Module):
    """HRNetV2p detection: a pyramid made by average-pooling the V2 output, and a light
    anchor-free (FCOS-style) head.

    Each level has its own tower (``tower_convs`` conv + BatchNorm + ReLU); the box, centerness and
    class predictors are shared across levels. A tower shared across levels does not
    work with BatchNorm: the levels' statistics differ (average pooling changes them),
    one BatchNorm learns a mixture that matches no level, and the eval-mode model
    differs from the trained one. Shared convolutions with per-level BatchNorm fail at
    export instead: folding each level's BatchNorm into the one shared weight (ExecuTorch's
    XNNPACK lowering does) overwrites it for the other levels. The shared predictors are
    copied per level for ExecuTorch (see :func:`per_level_predictors`).

    Output: one tensor (N, P, 5 + num_classes) over all pyramid points P, ordered level
    by level (strides 4, 8, 16, ...), row-major inside a level. Per point:
    ``[l, t, r, b, centerness, class logits...]`` where the box is
    ``(cx - exp(l)*s, cy - exp(t)*s, cx + exp(r)*s, cy + exp(b)*s)`` with the point's
    centre ``(cx, cy) = ((col + 0.5) * s, (row + 0.5) * s)`` and stride ``s``; score is
    ``sigmoid(class) * sigmoid(centerness)``. Decoding and NMS stay outside the graph.
    """

    def __init__(self, channels: tuple[int, ...], num_classes: int, head_channels: int,
                 levels: int, mode: str, align_corners: bool, tower_convs: int = 2):
        super().__init__()
        self.levels = levels
        self.concat = ConcatUp(mode, align_corners)
        self.reduce = nn.Conv2d(sum(channels), head_channels, 1)
        self.level_convs = nn.ModuleList(
            nn.Conv2d(head_channels, head_channels, 3, padding=1) for _ in range(levels)
        )
        self.towers = nn.ModuleList(
            nn.Sequential(*(conv_bn(head_channels, head_channels) for _ in range(tower_convs)))
            for _ in range(levels)
        )
        self.box = nn.Conv2d(head_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(head_channels, 1, 3, padding=1)
        self.cls = nn.Conv2d(head_channels, num_classes, 3, padding=1)
        nn.init.constant_(self.cls.bias, -4.6)  # prior 0.01, the usual focal-loss start
        # The pyramid's k x k average pooling (stride k), written as a fixed depthwise
        # convolution with weights 1/k^2: the same values, and a form every INT8 route
        # takes (XNNPACK compiles no int8 AVERAGE_POOL_2D: ExecuTorch fails to load
        # the program, LiteRT leaves it on its own kernels). Not trained, not saved.
        for i in range(1, levels):
            k = 2**i
            self.register_buffer(f"pool{i}", torch.full((head_channels, 1, k, k), 1.0 / (k * k)),
                                 persistent=False)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(4 * 2**i for i in range(self.levels))

    def _pool(self, p, i: int):
        weight = getattr(self, f"pool{i}")
        return nn.functional.conv2d(p, weight, stride=2**i, groups=p.shape[1])

    def forward(self, xs):
        p = self.reduce(self.concat(xs))
        outs = []
        per_level = self._modules.get("per_level")  # set only inside per_level_predictors()
        for i, (conv, tower) in enumerate(zip(self.level_convs, self.towers)):
            t = tower(conv(self._pool(p, i) if i else p))
            box, centerness, cls = per_level[i] if per_level is not None else (self.box, self.centerness, self.cls)
            y = torch.cat([box(t), centerness(t), cls(t)], dim=1)
            # channels last, then points: the (N, P, 5 + C) layout without a transpose of a
            # 3-D tensor (onnx2tf mis-permutes a concat of (N, D, P_i) tensors)
            outs.append(y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, y.shape[1]))
        return torch.cat(outs, dim=1)


@contextmanager
def per_level_predictors(model: nn.Module) -> Iterator[int]:
    """Give every :class:`DetHead` of ``model`` its own copy of the box, centerness and
    class predictors per level while the block runs (same weights: the outputs are
    identical); yields how many heads changed. Nothing is left on the model afterwards.

    For INT8 graphs quantized per use of a weight (PT2E for XNNPACK): a convolution
    shared by levels whose inputs have different scales gets one int32 bias whose scale
    (input scale x weight scale) fits only one level, and XNNPACK refuses to compile the
    others (xnn_status_invalid_parameter). With one copy per level each is consistent.
    """
    heads = [m for m in model.modules() if isinstance(m, DetHead)]
    for h in heads:
        h.per_level = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(m) for m in (h.box, h.centerness, h.cls)) for _ in range(h.levels))
    try:
        yield len(heads)
    finally:
        for h in heads:
            del h.per_level


class ClsHead(nn.Module):
    """The classification head: each branch through one bottleneck to ``planes`` (x4;
    the papers' 32/64/128/256), strided 3x3 convs that merge high into low resolution
    step by step, a 1x1 conv to ``features`` (the papers' 2048), global average pooling
    and a linear classifier."""

    def __init__(self, channels: tuple[int, ...], num_classes: int,
                 planes: tuple[int, ...] = (32, 64, 128, 256), features: int = 2048):
        super().__init__()
        self.incre = nn.ModuleList(Bottleneck(c, p) for c, p in zip(channels, planes))
        outs = [p * Bottleneck.expansion for p in planes]
        self.down = nn.ModuleList(conv_bn(outs[i], outs[i + 1], 3, 2) for i in range(3))
        self.final = conv_bn(outs[-1], features, 1)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, xs):
        y = self.incre[0](xs[0])
        for i, down in enumerate(self.down):
            y = self.incre[i + 1](xs[i + 1]) + down(y)
        # keepdim, then flatten: the same values, and the form XNNPACK takes as global
        # average pooling (a mean without keepdim stays on ExecuTorch's portable kernels)
        y = self.final(y).mean(dim=(2, 3), keepdim=True).flatten(1)
        return self.fc(y)
