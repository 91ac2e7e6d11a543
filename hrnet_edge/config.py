"""Frozen configurations and the table of HRNet variants.

Variants are data: a width spec (the backbone's depth and base width C) combined with
a task head gives one frozen :class:`ModelConfig`. Branch widths are always computed
from C as (C, 2C, 4C, 8C). Overrides go through :func:`dataclasses.replace`, which
raises on a misspelt key; :func:`apply_overrides` turns that into a ConfigError
listing the valid keys. This module imports no torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hrnet_edge.errors import ConfigError, unknown_choice

TASKS = ("pose", "seg", "det", "cls")
UPSAMPLE_MODES = ("nearest", "bilinear")
# How the exchange units upsample (hrnet_edge.models.blocks: where each form matters).
UPSAMPLE_FORMS = ("interpolate", "broadcast")
POSE_HEADS = ("v1", "v2")


@dataclass(frozen=True)
class BackboneConfig:
    """Depth and width of the HRNet backbone.

    Attributes:
        width: base width C; branch i has ``width * 2**i`` channels.
        stem_channels: channels of the two stride-2 stem convs.
        stage1_blocks: bottleneck blocks in stage 1.
        stage1_planes: bottleneck planes in stage 1 (output is 4x this).
        stage_modules: number of exchange modules in stages 2, 3 and 4.
        stage_blocks: basic blocks per branch inside each module of stages 2, 3, 4.
        upsample_mode: how fuse layers go up in resolution ("nearest" as the papers,
            or "bilinear", which XNNPACK delegates).
        align_corners: for bilinear upsampling only.
    """

    width: int
    stem_channels: int = 64
    stage1_blocks: int = 4
    stage1_planes: int = 64
    stage_modules: tuple[int, int, int] = (1, 4, 3)
    stage_blocks: tuple[int, int, int] = (4, 4, 4)
    upsample_mode: str = "nearest"
    align_corners: bool = False

    @property
    def branch_channels(self) -> tuple[int, int, int, int]:
        return tuple(self.width * 2**i for i in range(4))  # type: ignore[return-value]

    def validate(self) -> None:
        from hrnet_edge.fields import check_fields

        check_fields(self, "model")  # types first: a string width must not reach a comparison
        if self.width < 1 or self.stem_channels < 1 or self.stage1_planes < 1:
            raise ConfigError("width, stem_channels and stage1_planes must be >= 1")
        if self.stage1_blocks < 1:
            raise ConfigError("stage1_blocks must be >= 1")
        if len(self.stage_modules) != 3 or len(self.stage_blocks) != 3:
            raise ConfigError("stage_modules and stage_blocks need 3 entries (stages 2, 3, 4)")
        if min(self.stage_modules) < 1 or min(self.stage_blocks) < 1:
            raise ConfigError("stage_modules and stage_blocks entries must be >= 1")
        if self.upsample_mode not in UPSAMPLE_MODES:
            raise unknown_choice("upsample_mode", self.upsample_mode, UPSAMPLE_MODES)


@dataclass(frozen=True)
class ModelConfig:
    """One buildable model: backbone + task head + its default input.

    Attributes:
        name: registry name, e.g. ``hrnet_w32_pose``.
        width_name: the width family, e.g. ``w32`` or ``w18_small_v1``.
        task: one of ``pose``, ``seg``, ``det``, ``cls``.
        backbone: the backbone configuration.
        num_outputs: keypoints (pose), classes (seg, det, cls).
        input_size: default (height, width).
        head_channels: channels of the detection pyramid and tower.
        det_tower_convs: conv + BatchNorm + ReLU layers in each pyramid level's detection
            tower (FCOS uses 4 at 256 channels). The edge widths use 1: on the built-in
            data the pipeline's default (32 channels, 128x128) trained to a higher box AP
            with one than with two in the same 20 epochs (0.420 against 0.386, Xeon), at
            13 % fewer MACs.
        cls_planes / cls_features: the classification head's bottleneck planes per
            branch (x4 channels out) and the channels before pooling. The papers use
            (32, 64, 128, 256) and 2048 at every width (about 10 M of W18's 21 M
            parameters); the edge widths scale them with the backbone (W8: its branch
            widths and 512), so hrnet_w8_cls stays a 1 M-parameter model.
        pose_head: ``"v1"``, the papers' pose head (a 1x1 conv on the high-resolution
            stream), or ``"v2"``, a 1x1 conv on the HRNetV2 representation (all four
            streams upsampled and concatenated). The edge widths use ``"v2"``: from W8's
            8 high-resolution channels a 1x1 conv can only make heatmaps that lie in an
            8-dimensional space, fewer than the 17 keypoints, and a trained W8 then put
            wrists on elbows and hips (see the README's figures).
        head_upsample_mode / head_align_corners: how the V2/V2p heads bring lower
            branches up to the highest resolution (bilinear in the papers).
        normalize_in_graph: when True the model takes RGB in 0..1 and applies
            ``mean``/``std`` itself, so an exported artifact needs no preprocessing.
        published_params_m / published_gflops: figures from the HRNet papers at the
            default input size (None for the edge widths).
    """

    name: str
    width_name: str
    task: str
    backbone: BackboneConfig
    num_outputs: int
    input_size: tuple[int, int]
    head_channels: int = 256
    cls_planes: tuple[int, int, int, int] = (32, 64, 128, 256)
    cls_features: int = 2048
    pose_head: str = "v1"
    det_levels: int = 4
    det_tower_convs: int = 2
    head_upsample_mode: str = "bilinear"
    head_align_corners: bool = False
    normalize_in_graph: bool = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    published_params_m: float | None = None
    published_gflops: float | None = None

    def validate(self) -> None:
        from hrnet_edge.fields import check_fields

        check_fields(self, "model")
        self.backbone.validate()
        if self.task not in TASKS:
            raise unknown_choice("task", self.task, TASKS)
        if self.num_outputs < 1:
            raise ConfigError("num_outputs must be >= 1")
        h, w = self.input_size
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ConfigError(f"input_size must be positive multiples of 32, got {self.input_size}")
        if self.head_upsample_mode not in UPSAMPLE_MODES:
            raise unknown_choice("head_upsample_mode", self.head_upsample_mode, UPSAMPLE_MODES)
        if self.pose_head not in POSE_HEADS:
            raise unknown_choice("pose_head", self.pose_head, POSE_HEADS)
        if len(self.cls_planes) != 4 or min(self.cls_planes) < 1 or self.cls_features < 1:
            raise ConfigError(f"cls_planes must be 4 positive ints and cls_features positive, "
                              f"got {self.cls_planes}, {self.cls_features}")
        if not 1 <= self.det_levels <= 5:
            raise ConfigError("det_levels must be between 1 and 5")
        if not 1 <= self.det_tower_convs <= 4:
            raise ConfigError(f"det_tower_convs must be between 1 and 4, got {self.det_tower_convs}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        backbone = data.pop("backbone")
        cfg = _replace(cls, None, data, backbone=BackboneConfig(**_tuples(backbone)))
        return cfg


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _replace(cls, base, overrides: dict[str, Any], **extra):
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} field(s) {unknown}; valid: {', '.join(valid)}"
        )
    values = _tuples(overrides)
    values.update(extra)
    try:
        return cls(**values) if base is None else dataclasses.replace(base, **values)
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc


def apply_overrides(cfg: ModelConfig, **overrides: Any) -> ModelConfig:
    """Return ``cfg`` with overrides applied; backbone fields may be given flat.

    ``apply_overrides(cfg, width=8, input_size=(128, 96))`` sets the backbone's width
    and the model's input size. A key that neither level knows raises ConfigError.
    """
    bb_fields = {f.name for f in dataclasses.fields(BackboneConfig)}
    top_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(k for k in overrides if k not in bb_fields | top_fields)
    if unknown:
        raise ConfigError(
            f"unknown override key(s) {unknown}; valid model keys: {', '.join(sorted(top_fields))}; "
            f"valid backbone keys: {', '.join(sorted(bb_fields))}"
        )
    bb = {k: v for k, v in overrides.items() if k in bb_fields}
    top = {k: v for k, v in overrides.items() if k not in bb_fields}
    if isinstance(top.get("backbone"), dict):
        bb.update(top.pop("backbone"))
    if bb:
        top["backbone"] = _replace(BackboneConfig, cfg.backbone, bb)
    if top:
        cfg = _replace(ModelConfig, cfg, top)
    cfg.validate()
    return cfg


# --- the table of widths -----------------------------------------------------------
# Depths follow the HRNet papers' configurations; the edge widths are ours.
WIDTHS: dict[str, BackboneConfig] = {
    "w18_small_v1": BackboneConfig(
        width=16, stage1_blocks=1, stage1_planes=32, stage_modules=(1, 1, 1), stage_blocks=(2, 2, 2)
    ),
    "w18_small_v2": BackboneConfig(
        width=18, stage1_blocks=2, stage1_planes=64, stage_modules=(1, 3, 2), stage_blocks=(2, 2, 2)
    ),
    "w18": BackboneConfig(width=18),
    "w32": BackboneConfig(width=32),
    "w40": BackboneConfig(width=40),
    "w48": BackboneConfig(width=48),
    # Edge widths: one module per stage, two blocks per branch, a narrow stem.
    "w8": BackboneConfig(
        width=8, stem_channels=32, stage1_blocks=1, stage1_planes=16,
        stage_modules=(1, 1, 1), stage_blocks=(2, 2, 2),
    ),
    "w16": BackboneConfig(
        width=16, stem_channels=48, stage1_blocks=1, stage1_planes=32,
        stage_modules=(1, 2, 1), stage_blocks=(2, 2, 2),
    ),
}
PUBLISHED_WIDTHS = ("w18_small_v1", "w18_small_v2", "w18", "w32", "w40", "w48")
EDGE_WIDTHS = ("w8", "w16")

# Default input size and output count per task.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "pose": {"num_outputs": 17, "input_size": (256, 192)},
    "seg": {"num_outputs": 19, "input_size": (512, 1024)},
    "det": {"num_outputs": 80, "input_size": (512, 512)},
    "cls": {"num_outputs": 1000, "input_size": (224, 224)},
}

# Figures published in the HRNet papers (params in millions, GFLOPs as multiply-adds)
# at the input the paper states. Segmentation is published at 1024x2048, so those rows
# carry that input size.
PUBLISHED: dict[tuple[str, str], dict[str, Any]] = {
    ("w32", "pose"): {"params": 28.5, "gflops": 7.1},
    ("w48", "pose"): {"params": 63.6, "gflops": 14.6},
    ("w18_small_v1", "cls"): {"params": 13.2, "gflops": 1.49},
    ("w18_small_v2", "cls"): {"params": 15.6, "gflops": 2.42},
    ("w18", "cls"): {"params": 21.3, "gflops": 3.99},
    ("w32", "cls"): {"params": 41.2, "gflops": 8.31},
    ("w40", "cls"): {"params": 57.6, "gflops": 11.8},
    ("w48", "cls"): {"params": 77.5, "gflops": 16.1},
    ("w48", "seg"): {"params": 65.8, "gflops": 696.2, "input_size": (1024, 2048)},
    ("w18_small_v1", "seg"): {"params": 1.5, "gflops": 31.1, "input_size": (1024, 2048)},
    ("w18_small_v2", "seg"): {"params": 3.9, "gflops": 71.6, "input_size": (1024, 2048)},
}


def _build_table() -> dict[str, ModelConfig]:
    table: dict[str, ModelConfig] = {}
    for width_name, backbone in WIDTHS.items():
        for task in TASKS:
            name = f"hrnet_{width_name}_{task}"
            pub = PUBLISHED.get((width_name, task), {})
            defaults = dict(TASK_DEFAULTS[task])
            if "input_size" in pub:
                defaults["input_size"] = pub["input_size"]
            if width_name in EDGE_WIDTHS:
                defaults["head_channels"] = 64
                defaults["det_tower_convs"] = 1
                defaults["pose_head"] = "v2"
                if task == "cls":
                    branches = tuple(backbone.width * 2 ** i for i in range(4))
                    defaults["cls_planes"] = branches
                    defaults["cls_features"] = 8 * branches[-1]
            table[name] = ModelConfig(
                name=name, width_name=width_name, task=task, backbone=backbone,
                published_params_m=pub.get("params"), published_gflops=pub.get("gflops"),
                **defaults,
            )
    return table


VARIANTS: dict[str, ModelConfig] = _build_table()


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The frozen config of variant ``name`` with ``overrides`` applied."""
    if name not in VARIANTS:
        raise unknown_choice("model", name, VARIANTS)
    cfg = VARIANTS[name]
    return apply_overrides(cfg, **overrides) if overrides else cfg
