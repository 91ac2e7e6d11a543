"""The Task interface: everything after the model that depends on what the model does.

A task gives its data configuration and datasets, its loss, ``evaluate`` with one
primary metric, how two outputs are compared for parity and the thresholds per
precision (relative to the output's own scale), and the metadata an app needs. The
trainer, QAT, export jobs, checks and report take a Task and never name a metric or
a loss; adding a head is adding one task module and registering it here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from hrnet_edge.errors import ConfigError, DataError, RunDirError, unknown_choice
from hrnet_edge.evaluation.parity import parity_stats
from hrnet_edge.io import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hrnet_edge.runconfig import RunConfig
    from hrnet_edge.runs import RunDir

InferFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalResult:
    """What ``Task.evaluate`` returns.

    Attributes:
        metrics: the task's metrics; ``metrics[task.metric]`` is the primary one.
        outputs: the raw model outputs the parity is computed on (heatmaps, logits),
            or None when they were not kept.
        decoded: the decoded predictions the task agreement is computed on
            (keypoints, label maps, top-1 classes).
        ids: which validation items the rows belong to (image ids, indices).
    """

    metrics: dict[str, Any]
    outputs: np.ndarray | None = None
    decoded: np.ndarray | None = None
    ids: np.ndarray | None = None


# Pass/fail thresholds for tasks whose outputs are class logits (seg, cls): errors
# relative to the logits' range; agreement of the argmax with the reference's; INT8 must
# stay within one point of the metric of the model it came from.
LOGIT_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_rel_abs": 1e-3, "min_cosine": 0.9999, "min_agreement": 0.995, "max_metric_drop": 0.005},
    "fp16": {"max_rel_abs": 3e-2, "min_cosine": 0.999, "min_agreement": 0.98, "max_metric_drop": 0.01},
    "bf16": {"max_rel_abs": 1e-1, "min_cosine": 0.99, "min_agreement": 0.95, "max_metric_drop": 0.03},
    "int8": {"max_rel_abs": 5e-1, "min_cosine": 0.95, "min_agreement": 0.9, "max_metric_drop": 0.01},
}


class Task:
    """Base class of the tasks; subclasses fill in the class attributes and methods."""

    name: ClassVar[str]
    metric: ClassVar[str]  # key of the primary metric in EvalResult.metrics
    metric_label: ClassVar[str]  # how reports name it ("OKS AP", "mIoU", "top-1")
    agreement_label: ClassVar[str]  # e.g. "keypoint agreement"
    data_config: ClassVar[type]  # the [data] section's dataclass
    eval_config: ClassVar[type]  # the [eval] section's dataclass
    # Pass/fail per precision: max |error| relative to the reference's range, cosine,
    # the task agreement and the drop of the primary metric.
    thresholds: ClassVar[dict[str, dict[str, float]]]
    shown_metrics: ClassVar[tuple[str, ...]] = ()  # shown in the training log line
    # model overrides of a run configuration that names none (the quick default size)
    default_overrides: ClassVar[dict[str, Any]] = {}
    # named training recipes: [train] values a run starts from ("quick" is the default)
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}}
    # [qat] values a run starts from (a value the run configuration sets wins)
    qat_defaults: ClassVar[dict[str, Any]] = {}

    # --- configuration -----------------------------------------------------------------
    def validate(self, cfg: RunConfig) -> None:
        """Check values that the dataclasses cannot (raise ConfigError)."""

    # --- data --------------------------------------------------------------------------
    def data_root(self, run: RunDir, cfg: RunConfig, generate: bool = False) -> Path:
        """The dataset root: the user's folder (``[data] root``), or the built-in data
        in the run directory. Only training (``generate=True``) may create the built-in
        data; later stages refuse a dataset this code would now draw differently."""
        if cfg.data.root is not None:
            root = Path(cfg.data.root)
            if not root.is_dir():
                raise DataError(f"data root {root} does not exist")
            return root
        self.generate(run.data_dir, cfg, reuse_only=not generate)
        return run.data_dir

    def generate(self, root: Path, cfg: RunConfig, reuse_only: bool) -> None:
        """Write (or reuse) the built-in dataset in the task's real format."""
        raise NotImplementedError

    def build_dataset(self, root: Path, split: str, cfg: RunConfig, train: bool):
        """The dataset of one split, augmenting when ``train``."""
        raise NotImplementedError

    def datasets(self, run: RunDir, cfg: RunConfig, generate: bool = False):
        """(train, val) datasets: train augments, val does not."""
        root = self.data_root(run, cfg, generate=generate)
        return (self.build_dataset(root, cfg.data.train_split, cfg, train=True),
                self.build_dataset(root, cfg.data.val_split, cfg, train=False))

    def eval_view_of_train(self, run: RunDir, cfg: RunConfig):
        """The training split without augmentation."""
        return self.build_dataset(self.data_root(run, cfg), cfg.data.train_split, cfg, train=False)

    def calibration_images(self, run: RunDir, cfg: RunConfig, n: int, seed: int = 0) -> np.ndarray:
        """``n`` un-augmented training images (NCHW float32 in 0..1) for INT8 calibration."""
        train = self.eval_view_of_train(run, cfg)
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(train), size=min(n, len(train)), replace=False))
        return train.stack_images(idx.tolist())

    @staticmethod
    def check_classes(dataset, cfg: RunConfig):
        """``dataset``, after checking that the model predicts as many classes as it has."""
        classes = cfg.model_config().num_outputs
        if dataset.num_classes != classes:
            raise ConfigError(f"the data has {dataset.num_classes} classes but the model predicts {classes}; "
                              f"set model_overrides.num_outputs = {dataset.num_classes}")
        return dataset

    # --- training ----------------------------------------------------------------------
    def inputs(self, batch) -> torch.Tensor:
        """The image tensor of a DataLoader batch."""
        return batch[0]

    def loss(self, outputs: torch.Tensor, batch, cfg: RunConfig) -> torch.Tensor:
        """The training loss of one batch."""
        raise NotImplementedError

    # --- evaluation --------------------------------------------------------------------
    def evaluate(self, infer: InferFn, dataset, cfg: RunConfig, batch_size: int = 32,
                 keep_outputs: bool = False, max_images: int | None = None,
                 fixed_batch: int | None = None, progress: bool = False) -> EvalResult:
        """Run ``infer`` (NCHW float32 0..1 in, raw outputs out) over ``dataset``."""
        raise NotImplementedError

    def agreement(self, ref: EvalResult, out: EvalResult, dataset) -> float:
        """Share of decoded predictions of ``out`` that match the reference's."""
        raise NotImplementedError

    def parity(self, ref: EvalResult, out: EvalResult, dataset) -> dict[str, float]:
        """Raw-output statistics (relative to the reference's range) plus agreement."""
        stats = parity_stats(ref.outputs, out.outputs)
        stats["agreement"] = float(self.agreement(ref, out, dataset))
        return stats

    def output_agreement(self, ref: np.ndarray, out: np.ndarray) -> float:
        """Share of decisions two raw output batches agree on, needing no labels (the
        natural-photo comparison): the argmax over axis 1 (a pixel's class, an image's
        top-1 class)."""
        return float((np.asarray(ref).argmax(1) == np.asarray(out).argmax(1)).mean())

    def confident_agreement(self, ref: np.ndarray, out: np.ndarray) -> tuple[float, int] | None:
        """:meth:`output_agreement` restricted to the decisions the reference is sure of,
        with how many there were; None where the task has no confidence to select on."""
        return None

    def failures(self, precision: str, parity: dict, metric_drop: float | None) -> list[str]:
        """The thresholds a check breaks (empty: passed)."""
        t = self.thresholds[precision]
        out = []
        if parity["rel_max_abs"] > t["max_rel_abs"]:
            out.append(f"max |error| {parity['rel_max_abs']:.3g} of the output range > {t['max_rel_abs']:g}")
        if parity["cosine"] < t["min_cosine"]:
            out.append(f"cosine {parity['cosine']:.5f} < {t['min_cosine']:g}")
        if parity["agreement"] < t["min_agreement"]:
            out.append(f"{self.agreement_label} {parity['agreement']:.3f} < {t['min_agreement']:g}")
        # metrics are shares of images or pixels: 0.19 - 0.18 is 0.010000000000000009,
        # which must not read as more than a 0.01 limit
        if metric_drop is not None and metric_drop > t["max_metric_drop"] + 1e-9:
            out.append(f"{self.metric_label} drop {metric_drop:.4f} > {t['max_metric_drop']:g}")
        return out

    # --- references saved by the check of the PyTorch models ---------------------------
    def save_reference(self, path: Path, result: EvalResult) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, outputs=result.outputs, decoded=result.decoded, ids=result.ids)

    def load_reference(self, path: Path, metrics: dict) -> EvalResult:
        if not path.is_file():
            raise RunDirError(f"reference {path.name} is missing")
        with np.load(path) as data:
            return EvalResult(metrics=metrics, outputs=data["outputs"], decoded=data["decoded"],
                              ids=data["ids"])

    def eval_note(self, cfg: RunConfig) -> str:
        """One sentence for the report: what the metric is and how outputs are decoded."""
        return f"{self.metric_label} on the validation split"

    # --- metadata ----------------------------------------------------------------------
    def app_info(self, run: RunDir, cfg: RunConfig) -> dict[str, Any]:
        """Task facts an app needs beside the artifact (class names, keypoints ...)."""
        return {}


def torch_infer(model: nn.Module) -> InferFn:
    """Wrap a PyTorch model as the numpy-in, numpy-out callable every evaluator takes;
    it runs in fp32 on the device the model's weights are on (a GPU in training)."""
    import torch

    model.eval()
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")

    @torch.no_grad()
    def infer(x: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        return model(images).float().cpu().numpy()

    return infer


_TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task of its ``name``."""
    _TASKS[cls.name] = cls
    return cls


TASK_MODULES = ("pose", "seg", "det", "cls")


def _load_all() -> None:
    # the task modules register themselves on import
    import importlib

    for name in TASK_MODULES:
        importlib.import_module(f"hrnet_edge.tasks.{name}")


def get_task(name: str) -> Task:
    """The Task registered as ``name`` (``pose``, ``seg``, ``cls``)."""
    _load_all()
    if name not in _TASKS:
        from hrnet_edge.config import TASKS

        missing = sorted(set(TASKS) - set(_TASKS))
        hint = f" (the {', '.join(missing)} head(s) build and export; their task is not in the pipeline yet)" if missing else ""
        raise unknown_choice("task", name, _TASKS) if name not in TASKS else \
            ConfigError(f"task {name!r} cannot be trained or checked yet{hint}; "
                        f"tasks with a pipeline: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]()


def registered_tasks() -> list[str]:
    _load_all()
    return sorted(_TASKS)


def build_section(cls, values: Any, where: str):
    """A section dataclass from a dict, every key checked (lists become tuples)."""
    if dataclasses.is_dataclass(values):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table/object, got {type(values).__name__}")
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{where}]; valid: {', '.join(sorted(valid))}")
    obj = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    from hrnet_edge.fields import check_fields

    check_fields(obj, where)  # types and ranges, before anything uses the values
    return obj
