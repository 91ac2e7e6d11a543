"""The configuration of one run (data, training, QAT, export, check).

Loaded from a JSON or TOML file whose sections mirror these dataclasses; every key
is checked, so a misspelt key is a ConfigError naming the valid ones. The resolved
configuration is written to ``<run>/config.json`` and read back by later stages.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrnet_edge.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """FP32 training. The defaults are the task's quick recipe (``Task.recipes``); a
    value set here wins over the recipe.

    ``optimizer`` is ``adamw`` or ``sgd`` (with ``momentum``); ``schedule`` is
    ``cosine`` (linear warm-up, then cosine to 1% of ``lr``), ``poly`` (``(1 -
    t)^poly_power``, HRNetV2's segmentation schedule) or ``step`` (x0.1 at each of
    ``milestones``, in epochs, the ImageNet recipe).
    """

    epochs: int = 6
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    poly_power: float = 0.9
    milestones: tuple[int, ...] = ()
    label_smoothing: float = 0.0
    warmup_epochs: int = 1
    seed: int = 0
    val_every: int = 1
    nesterov: bool = False  # SGD only (HRNet's ImageNet recipe)
    # Distributed training (torchrun): batch_size is per process. With
    # lr_reference_batch set, lr is for that total batch and scales linearly with the
    # run's total batch (batch_size x processes), the linear scaling rule of Goyal et
    # al. 2017; unset, lr is used as given at any number of processes.
    lr_reference_batch: int | None = None
    # Training processes on this machine: above 1, `train` and `pipeline` start them
    # through torchrun (DistributedDataParallel; gloo on the CPU, one thread each; one
    # CUDA device each). `train --nproc N` overrides it for one command.
    processes: int = 1
    sync_bn: bool = False  # BatchNorm statistics over the whole batch of all processes
    # Weights and images in channels-last memory order while training (the same
    # arithmetic; oneDNN's and cuDNN's faster convolution kernels): hrnet_w8_det at
    # 128x128, batch 8, 2 threads on the AMD EPYC: 95 ms a step against 124 ms.
    channels_last: bool = True
    # Where training and QAT run: "auto" (the process's CUDA device when torch sees
    # CUDA, under torchrun the one of its LOCAL_RANK; else the CPU), "cpu", "cuda" (the
    # process's CUDA device) or "cuda:N". Checkpoints are the same whatever it is.
    device: str = "auto"
    # Training arithmetic: "fp32"; "bf16" (torch.autocast, on CUDA or CPU); "fp16"
    # (autocast with a GradScaler, CUDA only); "auto" (bf16 on a CUDA device that has
    # it and on a CPU with BF16 units, avx512_bf16 or amx_bf16; else fp32). The loss is
    # computed in fp32 whatever it is; evaluation and QAT run in fp32.
    precision: str = "fp32"


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly", "step")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class InitConfig:
    """Weights a run starts from (``[model] init = "path"``): published HRNet weights
    (timm, the official pose and segmentation releases) or an hrnet-edge checkpoint;
    ``parts`` says which (``backbone``, ``head``); ``source`` the key map (``auto``
    detects it). ``sha256`` is the file's, recorded when the configuration is read."""

    path: str | None = None
    parts: tuple[str, ...] = ("backbone", "head")
    source: str = "auto"
    sha256: str | None = None


@dataclass(frozen=True)
class QatConfig:
    """NNCF quantization-aware training.

    ``steps_per_epoch``: stop each QAT epoch after this many batches (0: the whole
    training set); under ``qat --nproc N`` the batches of each process.
    ``bias_correction``: NNCF's fast bias correction after the range initialisation
    (its default); it can cost accuracy as well as time, see the detection task's
    measurements.
    """

    calibration_images: int = 64
    epochs: int = 1
    lr: float = 1e-5
    batch_size: int = 32
    steps_per_epoch: int = 0
    bias_correction: bool = True


@dataclass(frozen=True)
class ExportConfig:
    """Which targets and precisions to export (all when empty)."""

    targets: tuple[str, ...] = ("onnx", "openvino", "tflite", "executorch", "coreml")
    precisions: tuple[str, ...] = ()
    calibration_images: int = 64
    # ExecuTorch in a second process beside the other targets; in `pipeline` also the
    # float exports in a worker beside QAT (pipeline.stages.start_early_exports)
    parallel: bool = True
    # TFLite and ExecuTorch INT8 take the activation ranges QAT learned (False: the
    # tools' own calibration on the QAT weights)
    carry_qat_ranges: bool = True
    # How TFLite and ExecuTorch graphs write the fuse layers' nearest upsampling:
    # "broadcast" (reshape x ones, which XNNPACK delegates: one partition) or
    # "interpolate" (the resize op XNNPACK leaves out: several partitions). The
    # values are identical; see the README's benchmark for the speed of each.
    upsample_form: str = "broadcast"


@dataclass(frozen=True)
class CheckConfig:
    """How artifacts are checked against PyTorch."""

    threads: int = 2
    warmup: int = 10
    iterations: int = 50
    parity_images: int = 32
    eval_images: int | None = None  # None: the whole validation split
    # random crops of shipped photos on which outputs are also compared (0: none)
    natural_images: int = 16


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; ``model`` is a registry name, ``model_overrides`` its
    config overrides (e.g. ``{"input_size": [128, 96]}``; the task's default when not
    given). ``data`` and ``eval`` are the sections of the model's task (e.g.
    :class:`hrnet_edge.tasks.pose.PoseData`); ``recipe`` names the task's training
    recipe whose values ``[train]`` starts from (``quick``, or ``paper`` for the HRNet
    papers' schedule)."""

    model: str = "hrnet_w8_pose"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    recipe: str = "quick"
    data: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    eval: Any = None
    init: InitConfig = field(default_factory=InitConfig)
    # values a recipe states that the trainer does not apply (e.g. half-body
    # augmentation): kept in config.json and printed by train, never read
    recorded: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self):
        """The resolved ModelConfig (validates the overrides)."""
        from hrnet_edge.config import get_config

        return get_config(self.model, **self.model_overrides)

    @property
    def task(self):
        """The :class:`~hrnet_edge.tasks.base.Task` of the model."""
        from hrnet_edge.tasks import get_task

        return get_task(self.model_config().task)


SECTIONS = {"qat": QatConfig, "export": ExportConfig, "check": CheckConfig, "init": InitConfig}


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a plain dict (a parsed file or ``config.json``)."""
    from hrnet_edge.config import get_config
    from hrnet_edge.tasks import get_task
    from hrnet_edge.tasks.base import build_section

    if not isinstance(data, dict):
        raise ConfigError(f"a run configuration is a table/object, got {type(data).__name__}")
    data = _model_table(dict(data))
    raw_sections = {name: data.pop(name, {}) for name in SECTIONS}
    per_task = {name: data.pop(name, {}) for name in ("data", "eval", "train")}
    top = build_section(RunConfig, data, "top level")
    model_cfg = get_config(top.model)  # raises ConfigError on a bad model name
    task = get_task(model_cfg.task)
    if "model_overrides" not in data:
        top = dataclasses.replace(top, model_overrides=dict(task.default_overrides))
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in top.model_overrides.items()}
    if top.recipe not in task.recipes:
        raise ConfigError(f"unknown recipe {top.recipe!r} for task {task.name}; valid: {', '.join(task.recipes)}")
    train = per_task["train"]
    if isinstance(train, dict):
        train = {**task.recipes[top.recipe], **train}
    if isinstance(raw_sections["qat"], dict):  # the task's QAT schedule, then the file's keys
        raw_sections["qat"] = {**task.qat_defaults, **raw_sections["qat"]}
    sections = {name: build_section(cls, raw_sections[name], name) for name, cls in SECTIONS.items()}
    cfg = dataclasses.replace(
        top, model_overrides=overrides, **sections,
        data=build_section(task.data_config, per_task["data"], "data"),
        eval=build_section(task.eval_config, per_task["eval"], "eval"),
        train=build_section(TrainConfig, train, "train"))
    cfg.model_config()  # raises ConfigError on a bad override
    _validate_train(cfg.train)
    cfg = dataclasses.replace(cfg, init=_resolve_init(cfg.init))
    from hrnet_edge.config import UPSAMPLE_FORMS  # no torch: a check process may not need it
    if cfg.export.upsample_form not in UPSAMPLE_FORMS:
        raise ConfigError(f"[export] upsample_form {cfg.export.upsample_form!r} is not known; "
                          f"valid: {', '.join(UPSAMPLE_FORMS)}")
    task.validate(cfg)
    return cfg


def _model_table(data: dict[str, Any]) -> dict[str, Any]:
    """``[model] name = ..., init = "path", init_parts = [...], init_source = ...`` (the
    model as a table) becomes ``model = name`` and the ``[init]`` section."""
    table = data.get("model")
    if not isinstance(table, dict):
        return data
    table = dict(table)
    keys = {"name": "model", "init": "path", "init_parts": "parts", "init_source": "source"}
    unknown = sorted(set(table) - set(keys))
    if unknown or "name" not in table:
        raise ConfigError(f"[model] takes {', '.join(keys)} (name required); got {sorted(table)}")
    if "init" in data:
        raise ConfigError("give the initial weights once: [model] init or [init] path, not both")
    data["model"] = table.pop("name")
    if table:
        data["init"] = {keys[k]: v for k, v in table.items()}
    return data


def _resolve_init(init: InitConfig) -> InitConfig:
    """The init file's absolute path and sha256 (checked against a recorded one)."""
    if init.path is None:
        if init.sha256 is not None:
            raise ConfigError("[init] sha256 without a path")
        return init
    from hrnet_edge.io import sha256_file
    from hrnet_edge.weights import PARTS, SOURCES

    if init.source != "auto" and init.source not in SOURCES:
        raise ConfigError(f"[init] source {init.source!r} is not known; valid: auto, {', '.join(SOURCES)}")
    bad = [p for p in init.parts if p not in PARTS]
    if bad or not init.parts:
        raise ConfigError(f"[init] parts {list(init.parts)}: valid parts are {', '.join(PARTS)}")
    path = Path(init.path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"[init] weights file {str(path)!r} does not exist")
    digest = sha256_file(path)
    if init.sha256 is not None and init.sha256 != digest:
        raise ConfigError(f"[init] weights file {path} changed since the run recorded it "
                          f"(sha256 {digest[:12]} vs recorded {init.sha256[:12]})")
    return dataclasses.replace(init, path=str(path), sha256=digest)


def _validate_train(t: TrainConfig) -> None:
    if t.optimizer not in OPTIMIZERS:
        raise ConfigError(f"[train] optimizer {t.optimizer!r} is not known; valid: {', '.join(OPTIMIZERS)}")
    if t.schedule not in SCHEDULES:
        raise ConfigError(f"[train] schedule {t.schedule!r} is not known; valid: {', '.join(SCHEDULES)}")
    if t.lr_reference_batch is not None and t.lr_reference_batch < 1:
        raise ConfigError(f"[train] lr_reference_batch must be >= 1, got {t.lr_reference_batch}")
    if not 0 <= t.label_smoothing < 1:
        raise ConfigError(f"[train] label_smoothing must be in [0, 1), got {t.label_smoothing}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device):
        raise ConfigError(f"[train] device {t.device!r} is not known; valid: {', '.join(DEVICES)} "
                          "(N a CUDA device index)")
    if t.precision not in PRECISIONS:
        raise ConfigError(f"[train] precision {t.precision!r} is not known; valid: {', '.join(PRECISIONS)}")
    if t.precision == "fp16" and t.device == "cpu":
        raise ConfigError("[train] precision 'fp16' runs on CUDA only (autocast with a GradScaler); "
                          "on device 'cpu' valid: fp32, bf16, auto")


def load_run_config(path: str | Path | None, model: str | None = None) -> RunConfig:
    """Read a JSON or TOML run configuration; None gives the built-in default.

    ``model`` (e.g. from ``--model``) replaces the file's model; the task's defaults
    then apply to what the file leaves out.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if model is not None:
        if not isinstance(data, dict):
            raise ConfigError(f"a run configuration is a table/object, got {type(data).__name__}")
        data = {**data, "model": model}
    return run_config_from_dict(data)
