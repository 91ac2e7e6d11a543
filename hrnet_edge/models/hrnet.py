"""The full model: optional in-graph normalization, backbone, task head."""
from __future__ import annotations

import torch
from torch import nn

from hrnet_edge.config import ModelConfig
from hrnet_edge.models.backbone import HRNetBackbone
from hrnet_edge.models.heads import ClsHead, DetHead, PoseHead, PoseHeadV2, SegHead


class Normalize(nn.Module):
    """(x - mean) / std on RGB in 0..1, folded into the graph for exported models."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) * self.inv_std


class HRNet(nn.Module):
    """An HRNet with one task head, built from a :class:`ModelConfig`.

    Input: float RGB, NCHW, in 0..1 when ``cfg.normalize_in_graph`` (the default),
    otherwise already normalized with ``cfg.mean``/``cfg.std``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.normalize = Normalize(cfg.mean, cfg.std) if cfg.normalize_in_graph else nn.Identity()
        v1_pose = cfg.task == "pose" and cfg.pose_head == "v1"
        self.backbone = HRNetBackbone(cfg.backbone, multi_scale_output=not v1_pose)
        ch = self.backbone.out_channels
        if v1_pose:
            self.head = PoseHead(ch, cfg.num_outputs)
        elif cfg.task == "pose":
            self.head = PoseHeadV2(ch, cfg.num_outputs, cfg.head_upsample_mode, cfg.head_align_corners)
        elif cfg.task == "seg":
            self.head = SegHead(ch, cfg.num_outputs, cfg.head_upsample_mode, cfg.head_align_corners)
        elif cfg.task == "det":
            self.head = DetHead(ch, cfg.num_outputs, cfg.head_channels, cfg.det_levels,
                                cfg.head_upsample_mode, cfg.head_align_corners, cfg.det_tower_convs)
        else:
            self.head = ClsHead(ch, cfg.num_outputs, cfg.cls_planes, cfg.cls_features)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None and m is not getattr(self.head, "cls", None):
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.task == "pose":  # small heatmap init, as in the pose papers
            nn.init.normal_(self.head.final.weight, std=0.001)
        if self.cfg.task == "det":
            # FCOS's start: predictors N(0, 0.01), so every raw output begins near its
            # bias. The He init above began with outputs beyond +-8, which the loss's
            # range term then fought (training/det_loss.py).
            for conv in (self.head.box, self.head.centerness, self.head.cls):
                nn.init.normal_(conv.weight, std=0.01)

    def forward(self, x):
        return self.head(self.backbone(self.normalize(x)))

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A correctly shaped input at the default size (for export and counting)."""
        return torch.rand(batch, 3, *self.cfg.input_size)
