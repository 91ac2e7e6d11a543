"""The data check before training: every split usable, every image decodable.

Training used to find a corrupt image mid-epoch (or see it silently turned grey) and an
empty validation split after a full epoch. :func:`preflight` runs once before the
first step: it refuses an empty split (saying what was dropped and why), decodes every
image file the datasets will read (the first bad one named), and returns a one-line
summary of what each split holds and what it left out.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from hrnet_edge.errors import DataError


def image_files(dataset: Any) -> list[Path]:
    """The image files a dataset reads, where it can say (pose: ``image_paths``; image
    folders: ``paths``; masks: ``pairs``; COCO instances: ``path(i)``)."""
    if hasattr(dataset, "image_paths"):
        return list(dataset.image_paths())
    if hasattr(dataset, "paths") and callable(dataset.paths):
        return list(dataset.paths())
    if hasattr(dataset, "pairs"):
        return [Path(a) for a, _b in dataset.pairs]
    if hasattr(dataset, "path") and hasattr(dataset, "image_ids"):
        return [dataset.path(i) for i in range(len(dataset.image_ids))]
    return []


def _dropped(dataset: Any) -> Counter:
    d = getattr(dataset, "dropped", None)
    if d is None:
        d = (getattr(dataset, "summary", None) or {}).get("dropped", {})
    return Counter({k: v for k, v in dict(d).items() if v})


def _describe(dropped: Counter) -> str:
    return ", ".join(f"{n} {why}" for why, n in dropped.most_common()) or "nothing"


def preflight(splits: Iterable[tuple[str, Any]], verify: Callable[[Path], None] | None = None) -> str:
    """Check ``(name, dataset)`` splits before training; return the summary line.

    Raises:
        DataError: a split has no usable item (naming what was dropped and why), or an
            image file cannot be decoded (naming the file).
    """
    if verify is None:
        from hrnet_edge.data.coco_keypoints import verify_image as verify
    parts = []
    for name, ds in splits:
        dropped = _dropped(ds)
        if len(ds) == 0:
            where = getattr(ds, "ann_file", None) or getattr(ds, "split_dir", None) or getattr(ds, "root", "")
            raise DataError(f"the {name} split {where} has no usable item (dropped: {_describe(dropped)}); "
                            "training needs both splits")
        files = image_files(ds)
        for f in files:
            verify(Path(f))
        parts.append(f"{name} {len(ds)} items from {len(files)} images, dropped {_describe(dropped)}")
    return "data checked: " + "; ".join(parts)
