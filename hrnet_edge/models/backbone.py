"""The HRNet backbone: a stem, a bottleneck stage, then 2-, 3- and 4-branch stages
of exchange modules that keep a high-resolution stream throughout."""
from __future__ import annotations

from torch import nn
import torch.nn.functional as F

from hrnet_edge.config import BackboneConfig
from hrnet_edge.models.blocks import BasicBlock, Bottleneck, Upsample, conv_bn


class FuseLayer(nn.Module):
    """Brings branch ``j`` to the resolution and width of branch ``i``."""

    def __init__(self, channels: tuple[int, ...], i: int, j: int, mode: str, align_corners: bool):
        super().__init__()
        if j > i:  # up: 1x1 conv, then upsample by 2**(j-i)
            self.op = nn.Sequential(
                conv_bn(channels[j], channels[i], 1, relu=False),
                Upsample(2 ** (j - i), mode, align_corners),
            )
        else:  # down: (i-j) strided 3x3 convs, ReLU between them, none after the last
            steps = []
            for k in range(i - j):
                last = k == i - j - 1
                steps.append(conv_bn(channels[j], channels[i] if last else channels[j], 3, 2, relu=not last))
            self.op = nn.Sequential(*steps)

    def forward(self, x):
        return self.op(x)


class ExchangeModule(nn.Module):
    """Parallel branches of basic blocks followed by multi-resolution fusion.

    Args:
        channels: width of each branch.
        blocks: basic blocks per branch.
        num_outputs: how many fused outputs to build (1 for the last module of the
            pose network, which uses only the high-resolution stream).
    """

    def __init__(self, channels: tuple[int, ...], blocks: int, num_outputs: int, cfg: BackboneConfig):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)]) for c in channels
        )
        n = len(channels)
        self.fuse = nn.ModuleList(
            nn.ModuleList(
                nn.Identity() if i == j else FuseLayer(channels, i, j, cfg.upsample_mode, cfg.align_corners)
                for j in range(n)
            )
            for i in range(num_outputs)
        ) if n > 1 else None

    def forward(self, xs: list):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse is None:
            return xs
        out = []
        for row in self.fuse:
            y = row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + row[j](xs[j])
            out.append(F.relu(y))
        return out


class Transition(nn.Module):
    """Adapts the previous stage's branches and adds one new, half-resolution branch."""

    def __init__(self, cin: tuple[int, ...], cout: tuple[int, ...]):
        super().__init__()
        layers = []
        for i, c in enumerate(cout):
            if i < len(cin):
                layers.append(nn.Identity() if cin[i] == c else conv_bn(cin[i], c, 3))
            else:  # the new branch comes from the lowest-resolution existing one
                layers.append(conv_bn(cin[-1], c, 3, 2))
        self.layers = nn.ModuleList(layers)
        self.n_in = len(cin)

    def forward(self, xs: list):
        return [layer(xs[min(i, self.n_in - 1)]) for i, layer in enumerate(self.layers)]


class HRNetBackbone(nn.Module):
    """HRNet backbone returning the list of branch outputs (high to low resolution).

    Args:
        cfg: backbone configuration.
        multi_scale_output: when False the last module fuses only into the
            high-resolution branch (HRNetV1 for pose) and one tensor list of length 1
            is returned.
    """

    def __init__(self, cfg: BackboneConfig, multi_scale_output: bool = True):
        super().__init__()
        cfg.validate()
        s = cfg.stem_channels
        self.stem = nn.Sequential(conv_bn(3, s, 3, 2), conv_bn(s, s, 3, 2))
        stage1_out = cfg.stage1_planes * Bottleneck.expansion
        self.layer1 = nn.Sequential(
            *[Bottleneck(s if k == 0 else stage1_out, cfg.stage1_planes) for k in range(cfg.stage1_blocks)]
        )
        chans = cfg.branch_channels
        prev: tuple[int, ...] = (stage1_out,)
        transitions, stages = [], []
        for si, (modules, blocks) in enumerate(zip(cfg.stage_modules, cfg.stage_blocks)):
            cur = chans[: si + 2]
            transitions.append(Transition(prev, cur))
            last_stage = si == 2
            mods = []
            for m in range(modules):
                n_out = 1 if (last_stage and m == modules - 1 and not multi_scale_output) else len(cur)
                mods.append(ExchangeModule(cur, blocks, n_out, cfg))
            stages.append(nn.Sequential(*mods))
            prev = cur
        self.transitions = nn.ModuleList(transitions)
        self.stages = nn.ModuleList(stages)
        self.out_channels = chans if multi_scale_output else chans[:1]

    def forward(self, x):
        xs = [self.layer1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages):
            xs = stage(transition(xs))
        return xs
