"""Image and index-mask files of segmentation datasets: decoding, resizing, colours.

Images are decoded with OpenCV (fast, RGB out); masks with Pillow, which keeps palette
('P') PNGs as their indices where OpenCV would expand them to colours. Resizing uses
bilinear interpolation for images and exact-centre nearest neighbour for labels, so
both stay on the same pixel grid.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from hrnet_edge.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Exact-centre nearest neighbour matches the pixel-centre grid that bilinear resizing
# of the image uses; plain INTER_NEAREST is shifted by up to half a source pixel.
_NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct RGB colours for ``num_classes`` classes, deterministic.

    Spreads the bits of the class index over the three channels, high bits first
    (class 0 is black, as VOC's background), so neighbouring ids differ strongly.
    """
    colours = []
    for k in range(num_classes):
        rgb, idx = [0, 0, 0], k
        for bit in range(7, -1, -1):
            for c in range(3):
                rgb[c] |= ((idx >> c) & 1) << bit
            idx >>= 3
        colours.append((rgb[0], rgb[1], rgb[2]))
    return colours


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]],
             ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """RGB uint8 picture of an HxW class-id map; ids outside the palette get ``ignore_color``."""
    lut = np.tile(np.asarray(ignore_color, np.uint8), (256, 1))
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    return lut[np.clip(np.asarray(label), 0, 255).astype(np.uint8)]


def decode_image(path: Path) -> np.ndarray:
    """uint8 HxWx3 RGB pixels of an image file.

    Raises:
        DataError: the file is missing, unreadable or not an image.
    """
    try:
        # np.fromfile + imdecode also reads paths that cv2.imread cannot (non-ASCII).
        raw = np.fromfile(str(path), np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    # Raw pixel order, EXIF orientation ignored: masks are stored in that order, and it
    # is the size the file header (used to check masks cheaply) reports.
    img = cv2.imdecode(raw, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if raw.size else None
    if img is None:
        raise DataError(f"image {path} is corrupt or not an image "
                        f"(valid: a readable {'/'.join(IMAGE_EXTENSIONS)} file)")
    return np.ascontiguousarray(img[..., ::-1])


def decode_mask(path: Path) -> np.ndarray:
    """uint8 HxW values of a single-channel (L or P mode) index PNG.

    Raises:
        DataError: the file is missing, corrupt, multi-channel or holds values > 255.
    """
    try:
        with Image.open(path) as im:
            # Pillow keeps palette ('P') PNGs as indices; OpenCV would expand them to colours.
            mode = im.mode
            arr = np.asarray(im)
    except Exception as exc:  # decoders raise many types on corrupt data
        raise DataError(f"mask {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
                        f"valid: a single-channel index PNG") from None
    if arr.ndim == 3 and arr.shape[2] >= 3 and (arr[..., 0] == arr[..., 1]).all() \
            and (arr[..., 0] == arr[..., 2]).all():
        arr = arr[..., 0]  # grey saved as RGB: unambiguous
    if arr.ndim != 2:
        raise DataError(f"mask {path} has mode {mode} with shape {arr.shape}; valid: a "
                        f"single-channel index PNG (mode L or P) whose pixels are class ids")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"mask {path} holds values up to {arr.max()}; valid: ids 0..255")
        arr = arr.astype(np.uint8)
    return arr


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxWxC image to ``size`` (H, W)."""
    if img.shape[:2] == size:
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def resize_label(lab: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW label map to ``size`` (H, W)."""
    if lab.shape == size:
        return lab
    return cv2.resize(lab, (size[1], size[0]), interpolation=_NEAREST)
