"""The configuration of one run (data, training, QAT, export, check).

Loaded from a JSON or TOML file whose sections mirror these dataclasses; every key
is checked, so a misspelt key is a ConfigError naming the valid ones. The resolved
configuration is written to ``<run>/config.json`` and read back by later stages.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrnet_edge.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Where the pose data comes from.

    ``root`` None means: generate the built-in synthetic COCO-keypoints dataset inside
    the run directory. Otherwise ``root`` holds ``annotations/person_keypoints_<split>.json``
    and ``images/<split>/`` as COCO does.
    """

    root: str | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    synthetic_train_images: int = 1200
    synthetic_val_images: int = 200
    synthetic_image_size: tuple[int, int] = (256, 256)
    seed: int = 0
    sigma: float = 2.0
    workers: int = 1
    # Training augmentation. HRNet's COCO recipe uses rotation 40 and scale 0.35 over
    # 210 epochs; the few-minute default run learns faster with milder augmentation.
    rotation: float = 15.0  # std in degrees, applied to 60% of crops
    scale_factor: float = 0.25  # std of the random scale
    flip: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """FP32 training."""

    epochs: int = 6
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    seed: int = 0
    val_every: int = 1


@dataclass(frozen=True)
class QatConfig:
    """NNCF quantization-aware training."""

    calibration_images: int = 64
    epochs: int = 1
    lr: float = 1e-5
    batch_size: int = 32


@dataclass(frozen=True)
class ExportConfig:
    """Which targets and precisions to export (all when empty)."""

    targets: tuple[str, ...] = ("onnx", "openvino", "tflite", "executorch", "coreml")
    precisions: tuple[str, ...] = ()
    calibration_images: int = 64
    parallel: bool = True  # ExecuTorch in a second process beside the other targets


@dataclass(frozen=True)
class CheckConfig:
    """How artifacts are checked against PyTorch."""

    threads: int = 2
    warmup: int = 10
    iterations: int = 50
    parity_images: int = 32
    eval_images: int | None = None  # None: the whole validation split


@dataclass(frozen=True)
class EvalConfig:
    """How pose outputs are decoded and scored (in training, QAT and every check).

    ``flip_test`` averages each crop's heatmaps with those of its mirror image (as the
    HRNet evaluation does); ``decoder`` is ``"dark"`` (distribution-aware sub-pixel
    refinement) or ``"quarter"`` (the original quarter-pixel shift).
    """

    flip_test: bool = True
    decoder: str = "dark"


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; ``model`` is a registry name, ``model_overrides`` its
    config overrides (e.g. ``{"input_size": [128, 96]}``)."""

    model: str = "hrnet_w8_pose"
    model_overrides: dict[str, Any] = field(default_factory=lambda: {"input_size": (128, 96)})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self):
        """The resolved ModelConfig (validates the overrides)."""
        from hrnet_edge.config import get_config

        return get_config(self.model, **self.model_overrides)


SECTIONS = {"data": DataConfig, "train": TrainConfig, "qat": QatConfig,
            "export": ExportConfig, "check": CheckConfig, "eval": EvalConfig}


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table/object, got {type(values).__name__}")
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{where}]; valid: {', '.join(valid)}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**clean)


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a plain dict (a parsed file or ``config.json``)."""
    data = dict(data)
    sections = {name: _build(cls, data.pop(name, {}), name) for name, cls in SECTIONS.items()}
    top = _build(RunConfig, data, "top level")
    cfg = dataclasses.replace(top, **sections)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model_overrides.items()}
    cfg = dataclasses.replace(cfg, model_overrides=overrides)
    cfg.model_config()  # raises ConfigError on a bad model name or override
    from hrnet_edge.data.heatmaps import DECODERS

    if cfg.eval.decoder not in DECODERS:
        raise ConfigError(f"[eval] decoder {cfg.eval.decoder!r} is not known; valid: {', '.join(DECODERS)}")
    if not isinstance(cfg.eval.flip_test, bool):
        raise ConfigError(f"[eval] flip_test must be true or false, got {cfg.eval.flip_test!r}")
    return cfg


def load_run_config(path: str | Path | None) -> RunConfig:
    """Read a JSON or TOML run configuration; None gives the built-in default."""
    if path is None:
        return run_config_from_dict({})
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    return run_config_from_dict(data)
