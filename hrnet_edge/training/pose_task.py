"""The pose task's glue: datasets of a run, PyTorch inference, evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads where a PyTorch model runs, not to read a run's data
    from torch import nn

from hrnet_edge.errors import DataError
from hrnet_edge.runconfig import RunConfig
from hrnet_edge.runs import RunDir


def data_root(run: RunDir, cfg: RunConfig, progress: bool = False, generate: bool = False) -> Path:
    """The dataset root of a run: the user's COCO folder, or the built-in synthetic
    dataset inside the run directory. Only training (``generate=True``) may create it;
    later stages refuse a dataset that this code would now draw differently."""
    if cfg.data.root is not None:
        root = Path(cfg.data.root)
        if not root.is_dir():
            raise DataError(f"data root {root} does not exist")
        return root
    from hrnet_edge.data.synthetic_pose import generate_synthetic_pose

    d = cfg.data
    generate_synthetic_pose(run.data_dir, num_train=d.synthetic_train_images, num_val=d.synthetic_val_images,
                            image_size=tuple(d.synthetic_image_size), seed=d.seed,
                            reuse_only=not generate)
    return run.data_dir


def build_dataset(root: Path, split: str, cfg: RunConfig, train: bool):
    """A top-down COCO-keypoints dataset for ``split`` (``train2017``, ``val2017``...)."""
    from hrnet_edge.data.coco_keypoints import CocoKeypoints

    ann = root / "annotations" / f"person_keypoints_{split}.json"
    images = root / "images" / split
    if not ann.is_file():
        raise DataError(f"annotation file {ann} is missing (expected COCO layout: "
                        f"annotations/person_keypoints_<split>.json and images/<split>/)")
    d = cfg.data
    return CocoKeypoints(str(ann), str(images), input_size=tuple(cfg.model_config().input_size),
                         train=train, sigma=d.sigma, rotation=d.rotation,
                         scale_factor=d.scale_factor, flip=d.flip)


def datasets(run: RunDir, cfg: RunConfig, progress: bool = False, generate: bool = False):
    """(train, val) datasets of a run; the train one augments, the val one does not."""
    root = data_root(run, cfg, progress, generate=generate)
    return (build_dataset(root, cfg.data.train_split, cfg, train=True),
            build_dataset(root, cfg.data.val_split, cfg, train=False))


def torch_infer(model: nn.Module):
    """Wrap a PyTorch model as the numpy-in, numpy-out callable every evaluator takes."""
    import torch

    model.eval()

    @torch.no_grad()
    def infer(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()

    return infer


def evaluate_model(model: nn.Module, val_ds, cfg: RunConfig, batch_size: int = 32,
                   progress: bool = False) -> dict:
    """OKS AP / PCK of a PyTorch model on a validation dataset, decoded as ``cfg.eval`` says."""
    from hrnet_edge.evaluation.pose import evaluate_pose

    return evaluate_pose(torch_infer(model), val_ds, batch_size=batch_size, progress=progress,
                         flip_test=cfg.eval.flip_test, decoder=cfg.eval.decoder).metrics


def calibration_images(train_root_ds, n: int, seed: int = 0) -> np.ndarray:
    """``n`` un-augmented training crops (NCHW float32 0..1) for calibration."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(train_root_ds), size=min(n, len(train_root_ds)), replace=False))
    return train_root_ds.stack_images(idx.tolist())
