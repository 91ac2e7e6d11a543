"""Natural photos for parity checks, from files that installed packages ship.

The validation images of the built-in datasets are synthetic: flat colours, sharp
edges, textures the generator knows. Quantization noise behaves differently on camera
images (smooth gradients, sensor noise, JPEG blocks), and an INT8 artifact that agrees
with its reference on synthetic images can disagree on photos. The check therefore
also compares outputs on random crops of real photos, with no labels needed: a
portrait that matplotlib ships (``grace_hopper.jpg``) and the two photos scikit-learn
ships (``china.jpg``, ``flower.jpg``). Nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from hrnet_edge.errors import DataError

PHOTOS = (("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
          ("sklearn", "datasets/images/china.jpg"),
          ("sklearn", "datasets/images/flower.jpg"))


def photo_paths() -> list[Path]:
    """The shipped photos found in this environment."""
    found = []
    for package, rel in PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            path = Path(spec.origin).parent / rel
            if path.is_file():
                found.append(path)
    return found


def natural_images(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``n`` random crops of the shipped photos at ``size`` (H, W), with the input's
    aspect ratio, 35-100 % of the largest such crop, mirrored half of the time.

    Returns:
        NCHW float32 RGB in 0..1.

    Raises:
        DataError: no photo found (neither matplotlib nor scikit-learn installed).
    """
    import cv2

    paths = photo_paths()
    if not paths:
        raise DataError("no natural photos found: they come with matplotlib and scikit-learn "
                        f"({', '.join(f'{p}/{r}' for p, r in PHOTOS)})")
    photos = []
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"could not read the photo {path}")
        photos.append(img[..., ::-1])
    h, w = size
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        img = photos[i % len(photos)]
        ph, pw = img.shape[:2]
        max_h = min(ph, pw * h / w)
        ch = max(2, int(max_h * rng.uniform(0.35, 1.0)))
        cw = max(2, min(pw, int(round(ch * w / h))))
        y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        crop = img[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        resized = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA)
        out[i] = resized.transpose(2, 0, 1).astype(np.float32) / 255.0
    return out
