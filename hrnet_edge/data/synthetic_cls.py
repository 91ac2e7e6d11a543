"""A seeded synthetic image classification dataset in the ImageNet folder layout.

What the images show, and why colour never tells the classes apart, is described in
:mod:`hrnet_edge.data.synthetic_cls_render`. This module writes the dataset:
``train/<class>/*.jpg``, ``val/<class>/*.jpg`` and ``generator.json``, atomically and
only when the parameters changed, with the same contract as
:func:`hrnet_edge.data.synthetic_pose.generate_synthetic_pose`.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from hrnet_edge.data.synthetic_cls_render import CLASS_NAMES, render_image
from hrnet_edge.data.generated import reuse_or_build, run_jobs
from hrnet_edge.errors import DataError

GENERATOR_VERSION = 2
SPLITS = ("train", "val")
MIN_SIDE, MAX_SIDE = 32, 1024
MIN_CLASSES = 2


def _render_chunk(args) -> int:
    """Render and write images [start, stop) of one class of one split."""
    out_dir, split_idx, class_idx, start, stop, image_size, seed = args
    cv2.setNumThreads(1)  # the pool already uses the cores
    name = CLASS_NAMES[class_idx]
    for i in range(start, stop):
        rng = np.random.default_rng([seed, split_idx, class_idx, i])
        img, quality = render_image(rng, name, image_size)
        path = Path(out_dir) / f"{name}_{i + 1:05d}.jpg"
        if not cv2.imwrite(str(path), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise DataError(f"could not write image {path}")
    return stop - start


def _write_split(tmp: Path, split_idx: int, count: int, params: dict, workers: int) -> None:
    jobs = []
    chunk = max(1, -(-count // 4))
    for class_idx, name in enumerate(params["class_names"]):
        out = tmp / SPLITS[split_idx] / name
        out.mkdir(parents=True)
        jobs += [(str(out), split_idx, class_idx, s, min(count, s + chunk),
                  tuple(params["image_size"]), params["seed"]) for s in range(0, count, chunk)]
    run_jobs(_render_chunk, jobs, workers)


def _paths(root: Path) -> dict[str, Path]:
    return {"root": root, "train": root / "train", "val": root / "val",
            "generator": root / "generator.json"}


def _int(name: str, value, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi], else a DataError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise DataError(f"{name} must be {bound}, got {value}")
    return int(value)


def _params(num_train_per_class, num_val_per_class, image_size, num_classes, seed) -> dict:
    try:
        h, w = image_size
    except (TypeError, ValueError):
        raise DataError(f"image_size must be (H, W), got {image_size!r}") from None
    h = _int("image_size H", h, MIN_SIDE, MAX_SIDE)
    w = _int("image_size W", w, MIN_SIDE, MAX_SIDE)
    k = _int("num_classes", num_classes, MIN_CLASSES, len(CLASS_NAMES))
    return {"generator": "synthetic_cls", "version": GENERATOR_VERSION,
            "num_train_per_class": _int("num_train_per_class", num_train_per_class, 1),
            "num_val_per_class": _int("num_val_per_class", num_val_per_class, 1),
            "image_size": [h, w], "num_classes": k, "class_names": list(CLASS_NAMES[:k]),
            "seed": _int("seed", seed, 0)}


def generate_synthetic_imagefolder(root: str | os.PathLike, num_train_per_class: int = 150,
                                   num_val_per_class: int = 30,
                                   image_size: tuple[int, int] = (96, 96), num_classes: int = 10,
                                   seed: int = 0, workers: int | None = None,
                                   reuse_only: bool = False) -> dict[str, Path]:
    """Generate (or reuse) the synthetic classification dataset under ``root``.

    Writes ``train/<class>/*.jpg``, ``val/<class>/*.jpg`` (the layout
    :class:`~hrnet_edge.data.classification.ImageFolderDataset` reads) and
    ``generator.json``. When ``generator.json`` already matches the parameters, nothing
    is regenerated. The dataset is built in a temporary folder beside ``root`` and
    renamed into place, so an interrupted run never looks complete.

    Args:
        root: output folder.
        num_train_per_class, num_val_per_class: images per class in each split (>= 1).
        image_size: (H, W) of every image, each side in [32, 1024].
        num_classes: how many classes, the first of
            :data:`~hrnet_edge.data.synthetic_cls_render.CLASS_NAMES` (2 to 20).
        seed: base seed (>= 0); the same seed gives byte-identical files.
        workers: processes used to render (default: up to 2); output is independent of it.
        reuse_only: never (re)generate; a missing or different dataset is a DataError.
            Stages after training use it, so that a model is never checked on images
            other than the ones its run was trained and validated with.

    Returns:
        dict with ``root``, ``train`` and ``val`` (split folders) and ``generator`` paths.

    Raises:
        DataError: ``root`` exists and is not a dataset made by this generator, the
            parameters are invalid, or (``reuse_only``) the dataset is missing or differs.
    """
    root = Path(root)
    params = _params(num_train_per_class, num_val_per_class, image_size, num_classes, seed)
    workers = min(2, os.cpu_count() or 1) if workers is None else _int("workers", workers, 1)

    def build(tmp: Path) -> None:
        _write_split(tmp, 0, params["num_train_per_class"], params, workers)
        _write_split(tmp, 1, params["num_val_per_class"], params, workers)

    reuse_or_build(root, params, build, reuse_only, "synthetic classification")
    return _paths(root)
