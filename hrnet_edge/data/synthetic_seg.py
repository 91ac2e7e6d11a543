"""A seeded synthetic street-scene dataset written in the real Cityscapes layout.

What the scenes show is described in :mod:`hrnet_edge.data.synthetic_seg_render`.
This module writes ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``, the matching
``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (real Cityscapes labelIds: 7 road,
26 car, ..., 1 ego vehicle and 4 static for ignored pixels) and ``generator.json``,
atomically and only when the parameters changed, so that
:func:`hrnet_edge.data.segmentation.load_cityscapes` reads it like the real dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from hrnet_edge.data.synthetic_seg_scene import render_street
from hrnet_edge.data.generated import reuse_or_build, run_jobs
from hrnet_edge.errors import DataError

GENERATOR_VERSION = 1
_SPLITS = ("train", "val")
# Two made-up cities per split; like Cityscapes, no city appears in two splits.
CITIES = {"train": ("northbridge", "southport"), "val": ("eastfield", "westmoor")}
# Fast, deterministic PNG encoding: level 1 keeps writing quick; the bytes depend only
# on the pixels and these flags.
_PNG_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def _stem(split: str, i: int) -> tuple[str, str]:
    """(city, file stem) of image ``i``: ``<city>_<sequence>_<frame>`` as in Cityscapes."""
    city = CITIES[split][i % len(CITIES[split])]
    return city, f"{city}_{i // len(CITIES[split]):06d}_000019"


def _write_png(path: Path, pixels: np.ndarray) -> None:
    if not cv2.imwrite(str(path), pixels, _PNG_FLAGS):
        raise DataError(f"could not write {path}")


def _render_range(args) -> None:
    """Render and write images [start, stop) of one split."""
    root, split_idx, start, stop, image_size, seed = args
    cv2.setNumThreads(1)
    split = _SPLITS[split_idx]
    for i in range(start, stop):
        img, label_ids = render_street(np.random.default_rng([seed, split_idx, i]), image_size)
        city, stem = _stem(split, i)
        _write_png(Path(root) / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                   np.ascontiguousarray(img[..., ::-1]))
        _write_png(Path(root) / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)


def _write_split(tmp: Path, split_idx: int, count: int, params: dict, workers: int) -> None:
    split = _SPLITS[split_idx]
    for city in CITIES[split]:
        (tmp / "leftImg8bit" / split / city).mkdir(parents=True)
        (tmp / "gtFine" / split / city).mkdir(parents=True)
    chunk = max(1, -(-count // max(1, workers * 4)))
    jobs = [(str(tmp), split_idx, s, min(count, s + chunk), tuple(params["image_size"]),
             params["seed"]) for s in range(0, count, chunk)]
    run_jobs(_render_range, jobs, workers)


def _paths(root: Path) -> dict[str, Path]:
    return {"root": root, "train_images": root / "leftImg8bit" / "train",
            "val_images": root / "leftImg8bit" / "val",
            "train_masks": root / "gtFine" / "train", "val_masks": root / "gtFine" / "val",
            "generator": root / "generator.json"}


def _params(num_train, num_val, image_size, seed) -> dict:
    """The generator.json record of valid parameters; DataError otherwise."""
    try:
        h, w = (int(v) for v in image_size)
        ok = num_train >= 0 and num_val >= 0 and h >= 64 and w >= 64 and seed >= 0 \
            and int(num_train) == num_train and int(num_val) == num_val
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"invalid synthetic segmentation parameters: num_train={num_train!r}, "
                        f"num_val={num_val!r} (integers >= 0), image_size={image_size!r} "
                        f"((H, W), each side >= 64), seed={seed!r} (>= 0)")
    return {"generator": "synthetic_cityscapes", "version": GENERATOR_VERSION,
            "num_train": int(num_train), "num_val": int(num_val), "image_size": [h, w],
            "seed": int(seed)}


def generate_synthetic_cityscapes(root: str | os.PathLike, num_train: int = 600,
                                  num_val: int = 100, image_size: tuple[int, int] = (256, 512),
                                  seed: int = 0, workers: int | None = None,
                                  reuse_only: bool = False) -> dict[str, Path]:
    """Generate (or reuse) the synthetic Cityscapes-format street dataset under ``root``.

    When ``generator.json`` already matches the parameters, nothing is regenerated. The
    dataset is built in a temporary folder beside ``root`` and renamed into place, so an
    interrupted run never looks complete.

    Args:
        root: output folder.
        num_train: number of training images (>= 0).
        num_val: number of validation images (>= 0).
        image_size: (H, W) of every image, each side >= 64.
        seed: base seed (>= 0); the same seed gives byte-identical files.
        workers: processes used to render (default: up to 2); output is independent of it.
        reuse_only: never (re)generate; a missing or different dataset is a DataError.
            Stages after training use it, so a model is never checked on other images
            than its run was trained and validated with.

    Returns:
        dict with ``root``, ``train_images``, ``val_images``, ``train_masks``,
        ``val_masks`` and ``generator`` paths.

    Raises:
        DataError: invalid parameters, or ``root`` exists and is not a dataset made by
            this generator, or (``reuse_only``) the dataset is missing or different.
    """
    root = Path(root)
    params = _params(num_train, num_val, image_size, seed)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))

    def build(tmp: Path) -> None:
        _write_split(tmp, 0, params["num_train"], params, workers)
        _write_split(tmp, 1, params["num_val"], params, workers)

    reuse_or_build(root, params, build, reuse_only, "synthetic segmentation")
    return _paths(root)
