"""A seeded synthetic detection dataset written in the real COCO instances layout.

What the images show is described in :mod:`hrnet_edge.data.synthetic_det_render`.
This module writes ``images/{train,val}/<12-digit image id>.jpg``,
``annotations/instances_{train,val}.json`` and ``generator.json``, atomically and only
when the parameters changed, so that
:func:`hrnet_edge.data.coco_instances.load_coco_instances` (and pycocotools) read it
like COCO itself.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from hrnet_edge.data.generated import reuse_or_build, run_jobs
from hrnet_edge.data.synthetic_det_render import CATEGORIES, render_image
from hrnet_edge.errors import DataError

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
# Fixed, so the bytes depend only on the seed (and OpenCV's JPEG encoder).
JPEG_QUALITY = 92


def image_id(split_idx: int, i: int) -> int:
    """COCO image id of image ``i`` of split ``split_idx``; ids never repeat across splits."""
    return (split_idx + 1) * 1_000_000 + i + 1


def _render_range(args) -> tuple[list[dict], list[dict]]:
    """Render and write images [start, stop) of one split; returns (images, annotations)."""
    out_dir, split_idx, start, stop, image_size, seed = args
    # One thread per process: workers already use the cores, and it keeps timings stable.
    cv2.setNumThreads(1)
    images, anns = [], []
    for i in range(start, stop):
        img, img_anns = render_image(np.random.default_rng([seed, split_idx, i]), image_size)
        iid = image_id(split_idx, i)
        name = f"{iid:012d}.jpg"
        path = Path(out_dir) / name
        if not cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise DataError(f"could not write image {path}")
        images.append({"id": iid, "file_name": name, "height": image_size[0],
                       "width": image_size[1]})
        anns.extend({**a, "image_id": iid} for a in img_anns)
    return images, anns


def _write_split(tmp: Path, split_idx: int, count: int, params: dict, workers: int) -> None:
    split = SPLITS[split_idx]
    img_dir = tmp / "images" / split
    img_dir.mkdir(parents=True)
    chunk = max(1, -(-count // max(1, workers * 4)))
    jobs = [(str(img_dir), split_idx, s, min(count, s + chunk), tuple(params["image_size"]),
             params["seed"]) for s in range(0, count, chunk)]
    parts = run_jobs(_render_range, jobs, workers)
    images = [im for p in parts for im in p[0]]
    anns = [a for p in parts for a in p[1]]
    # Ids are given after gathering, in image order, so they do not depend on chunking.
    for k, a in enumerate(anns, start=1):
        a["id"] = (split_idx + 1) * 10_000_000 + k
    data = {"info": {"description": "hrnet-edge synthetic instances",
                     "version": str(GENERATOR_VERSION)},
            "licenses": [], "images": images, "annotations": anns,
            "categories": [dict(c) for c in CATEGORIES]}
    (tmp / "annotations").mkdir(exist_ok=True)
    (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def _params(num_train, num_val, image_size, seed) -> dict:
    """The generator.json record of valid parameters; DataError otherwise."""
    try:
        h, w = (int(v) for v in image_size)
        ok = num_train >= 0 and num_val >= 0 and h >= 64 and w >= 64 and seed >= 0 \
            and int(num_train) == num_train and int(num_val) == num_val and int(seed) == seed
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"invalid synthetic instances parameters: num_train={num_train!r}, "
                        f"num_val={num_val!r} (integers >= 0), image_size={image_size!r} "
                        f"((H, W), each side >= 64), seed={seed!r} (integer >= 0)")
    return {"generator": "synthetic_coco_instances", "version": GENERATOR_VERSION,
            "num_train": int(num_train), "num_val": int(num_val), "image_size": [h, w],
            "seed": int(seed), "jpeg_quality": JPEG_QUALITY}


def generate_synthetic_coco_instances(root: str | os.PathLike, num_train: int = 1200,
                                      num_val: int = 200, image_size: tuple[int, int] = (256, 256),
                                      seed: int = 0, reuse_only: bool = False,
                                      workers: int | None = None) -> None:
    """Generate (or reuse) the synthetic COCO-instances detection dataset under ``root``.

    Writes ``images/{train,val}/<id>.jpg``, ``annotations/instances_{train,val}.json``
    (six categories with ids 1, 3, 5, 7, 9, 11; RLE segmentations; a few ``iscrowd``
    regions) and ``generator.json``. When ``generator.json`` already matches the
    parameters nothing is regenerated; the dataset is built beside ``root`` and renamed
    into place, so an interrupted run never looks complete.

    Args:
        root: output folder.
        num_train: number of training images (>= 0).
        num_val: number of validation images (>= 0).
        image_size: (H, W) of every image, each side >= 64; object sizes scale with it.
        seed: base seed (>= 0); the same seed gives byte-identical files.
        reuse_only: never (re)generate; a missing or different dataset is a DataError.
            Stages after training use it, so a model is never checked on other images
            than its run was trained and validated with.
        workers: processes used to render (None: up to 2, as the other generators);
            the output does not depend on it.

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

    reuse_or_build(root, params, build, reuse_only, "synthetic instances")
