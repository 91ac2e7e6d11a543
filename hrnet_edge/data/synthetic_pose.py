"""A seeded synthetic pose dataset written in the real COCO keypoints format.

What the images show, and why left and right are told apart by the facing direction
rather than by a costume, is described in :mod:`hrnet_edge.data.synthetic_pose_render`.
This module writes the dataset: ``images/{train2017,val2017}/*.jpg``,
``annotations/person_keypoints_{train2017,val2017}.json`` and ``generator.json``,
atomically and only when the parameters changed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from hrnet_edge.data.keypoints import coco_person_category
from hrnet_edge.data.synthetic_pose_render import render_image
from hrnet_edge.data.generated import reuse_or_build, run_jobs
from hrnet_edge.errors import DataError

GENERATOR_VERSION = 5
_SPLITS = ("train2017", "val2017")


def _render_split(args) -> tuple[list[dict], list[dict]]:
    """Render and write images [start, stop) of one split; returns (images, annotations)."""
    out_dir, split_idx, start, stop, image_size, seed, quality = args
    cv2.setNumThreads(1)
    images, anns = [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, split_idx, i])
        img, img_anns = render_image(rng, image_size)
        name = f"{i + 1:012d}.jpg"
        path = Path(out_dir) / name
        if not cv2.imwrite(str(path), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise DataError(f"could not write image {path}")
        image_id = (split_idx + 1) * 1_000_000 + i + 1
        images.append({"id": image_id, "file_name": name,
                       "height": image_size[0], "width": image_size[1]})
        for a in img_anns:
            anns.append({**a, "image_id": image_id})
    return images, anns


def _write_split(tmp: Path, split_idx: int, count: int, params: dict, workers: int) -> None:
    split = _SPLITS[split_idx]
    img_dir = tmp / "images" / split
    img_dir.mkdir(parents=True)
    chunk = max(1, -(-count // max(1, workers * 4)))
    jobs = [(str(img_dir), split_idx, s, min(count, s + chunk), tuple(params["image_size"]),
             params["seed"], params["jpeg_quality"]) for s in range(0, count, chunk)]
    parts = run_jobs(_render_split, jobs, workers)
    images = [im for p in parts for im in p[0]]
    anns = [a for p in parts for a in p[1]]
    for k, a in enumerate(anns, start=1):
        a["id"] = (split_idx + 1) * 10_000_000 + k
    data = {"info": {"description": "hrnet-edge synthetic pose", "version": str(GENERATOR_VERSION)},
            "licenses": [], "images": images, "annotations": anns,
            "categories": [coco_person_category()]}
    (tmp / "annotations").mkdir(exist_ok=True)
    (tmp / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))


def _paths(root: Path) -> dict[str, Path]:
    return {"root": root, "train_images": root / "images" / "train2017",
            "val_images": root / "images" / "val2017",
            "train_ann": root / "annotations" / "person_keypoints_train2017.json",
            "val_ann": root / "annotations" / "person_keypoints_val2017.json",
            "generator": root / "generator.json"}


def generate_synthetic_pose(root: str | os.PathLike, num_train: int = 1000, num_val: int = 200,
                            image_size: tuple[int, int] = (240, 320), seed: int = 0,
                            jpeg_quality: int = 92, workers: int | None = None,
                            reuse_only: bool = False) -> dict[str, Path]:
    """Generate (or reuse) the synthetic COCO-format pose dataset under ``root``.

    Writes ``images/{train2017,val2017}/*.jpg``, ``annotations/person_keypoints_*.json``
    and ``generator.json``. When ``generator.json`` already matches the parameters,
    nothing is regenerated. The dataset is built in a temporary folder beside ``root``
    and renamed into place, so an interrupted run never looks complete.

    Args:
        root: output folder.
        num_train, num_val: number of images per split.
        image_size: (H, W) of every image.
        seed: base seed; the same seed gives byte-identical files.
        jpeg_quality: JPEG quality 1-100.
        workers: processes used to render (default: up to 2); output is independent of it.
        reuse_only: never (re)generate; a missing or different dataset is a DataError.
            Stages after training use it, so that a model is never checked on images
            other than the ones its run was trained and validated with.

    Returns:
        dict with ``root``, ``train_images``, ``val_images``, ``train_ann``, ``val_ann``
        and ``generator`` paths.

    Raises:
        DataError: ``root`` exists and is not a dataset made by this generator, or the
            parameters are invalid.
    """
    root = Path(root)
    h, w = (int(v) for v in image_size)
    if num_train < 0 or num_val < 0 or h < 32 or w < 32 or not 1 <= jpeg_quality <= 100:
        raise DataError(f"invalid synthetic pose parameters: num_train={num_train}, "
                        f"num_val={num_val}, image_size={image_size} (each side >= 32), "
                        f"jpeg_quality={jpeg_quality} (1-100)")
    params = {"generator": "synthetic_pose", "version": GENERATOR_VERSION,
              "num_train": int(num_train), "num_val": int(num_val), "image_size": [h, w],
              "seed": int(seed), "jpeg_quality": int(jpeg_quality)}
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)

    def build(tmp: Path) -> None:
        _write_split(tmp, 0, num_train, params, workers)
        _write_split(tmp, 1, num_val, params, workers)

    reuse_or_build(root, params, build, reuse_only, "synthetic pose")
    return _paths(root)
