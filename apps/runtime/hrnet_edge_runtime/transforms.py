"""The task input transforms of the project's evaluation, in numpy (no OpenCV here).

The host's data loaders prepare model inputs with OpenCV; a device has no OpenCV, so
these functions reproduce those transforms with numpy on uint8 RGB pictures:

* :func:`warp_affine` - the pose person crop (host: ``cv2.warpAffine``, ``INTER_LINEAR``,
  zero border);
* :func:`resize_bilinear` - the detection letterbox and the segmentation resize (host:
  ``cv2.resize`` ``INTER_LINEAR``: half-pixel centres, no anti-aliasing when shrinking,
  which Pillow's bilinear resize of :func:`hrnet_edge_runtime.inputs.resize_rgb` has);
* :func:`resize_area` - the classification shrink (host: ``cv2.resize`` ``INTER_AREA``);
* :func:`resize_nearest` - label masks (host: ``INTER_NEAREST_EXACT``).

Differences from OpenCV: OpenCV computes in fixed point (``warpAffine`` rounds source
positions to 1/32 pixel and its bilinear weights to 1/1024, ``resize`` its weights to
1/2048), these functions in float with the result rounded to the nearest integer. A
pixel can differ by one or two grey levels; the positions sampled are the same.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hrnet_edge_runtime.errors import UsageError

# The grey the host's detection letterbox pads the right and bottom with.
LETTERBOX_PAD = 114


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise UsageError(f"expected an H x W x 3 uint8 RGB image, got {img.dtype} {tuple(img.shape)}")
    return img


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _size(size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise UsageError(f"an output size must be two positive ints (H, W), got {tuple(size)!r}")
    return h, w


def warp_affine(img: np.ndarray, mat: np.ndarray, output_size: Sequence[int]) -> np.ndarray:
    """Bilinear affine warp of uint8 RGB with zero borders, as ``cv2.warpAffine(img,
    mat, (W, H), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=0)``.

    Output pixel (x, y) samples the source at ``inverse(mat) @ (x, y, 1)`` in
    pixel-index coordinates (pixel centres at integers); each of the four neighbours
    outside the image counts as black, so the edge of the picture fades into the
    border as OpenCV's does.

    Args:
        img: H x W x 3 uint8 RGB.
        mat: 2 x 3 matrix from image to output coordinates (the crop affine).
        output_size: (H, W) of the output.
    """
    img = _rgb(img)
    out_h, out_w = _size(output_size)
    full = np.vstack([np.asarray(mat, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    ys, xs = np.meshgrid(np.arange(out_h, dtype=np.float64), np.arange(out_w, dtype=np.float64), indexing="ij")
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    h, w = img.shape[:2]
    src = img.astype(np.float64)

    def tap(yy, xx):
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        return np.where(inside[..., None], src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0.0)

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return _to_uint8(top * (1 - fy) + bottom * fy)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR source indices and weight per output index of one axis:
    ``src = (i + 0.5) * n_in / n_out - 0.5``, clamped to the first and last pixel."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    frac = np.where(i0 < 0, 0.0, frac)
    i0 = np.clip(i0, 0, n_in - 1)
    frac = np.where(i0 >= n_in - 1, 0.0, frac)
    return i0, np.minimum(i0 + 1, n_in - 1), frac


def resize_bilinear(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 RGB resized to ``size`` (H, W) as ``cv2.resize(..., INTER_LINEAR)``: two
    neighbours per axis at half-pixel centres, no filtering when shrinking."""
    img = _rgb(img)
    out_h, out_w = _size(size)
    if img.shape[:2] == (out_h, out_w):
        return img
    y0, y1, wy = _linear_taps(img.shape[0], out_h)
    x0, x1, wx = _linear_taps(img.shape[1], out_w)
    src = img.astype(np.float64)
    rows = src[y0] * (1 - wy)[:, None, None] + src[y1] * wy[:, None, None]
    return _to_uint8(rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None])


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: output pixel i averages the input span
    ``[i * n_in / n_out, (i + 1) * n_in / n_out)``, each input pixel by its overlap."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize_area(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 RGB shrunk to ``size`` (H, W) by area averaging, as ``cv2.resize(...,
    INTER_AREA)`` does when shrinking (every input pixel weighted by the share of it
    an output pixel covers). Growing an axis this way repeats pixels; use
    :func:`resize_bilinear` for that, as the host does."""
    img = _rgb(img)
    out_h, out_w = _size(size)
    if img.shape[:2] == (out_h, out_w):
        return img
    wy, wx = _area_matrix(img.shape[0], out_h), _area_matrix(img.shape[1], out_w)
    out = np.einsum("yh,hwc,xw->yxc", wy, img.astype(np.float64), wx, optimize=True)
    return _to_uint8(out)


def resize_nearest(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """An H x W label map resized to ``size`` (H, W) by exact-centre nearest neighbour
    (``INTER_NEAREST_EXACT``): output pixel i takes source ``floor((i + 0.5) * n_in / n_out)``
    (at exact ties OpenCV sometimes takes the lower neighbour)."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise UsageError(f"a label map must be H x W, got shape {lab.shape}")
    out_h, out_w = _size(size)
    if lab.shape == (out_h, out_w):
        return lab
    return lab[_nearest_index(lab.shape[0], out_h)[:, None], _nearest_index(lab.shape[1], out_w)[None, :]]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index per output index, ``floor((i + 0.5) * n_in / n_out)`` in exact
    integers. Where that position is exactly an integer (a tie between two source
    pixels), OpenCV's fixed point may pick the lower neighbour instead."""
    i = np.arange(n_out, dtype=np.int64)
    return np.minimum(((2 * i + 1) * n_in) // (2 * n_out), n_in - 1)


def letterbox(img: np.ndarray, input_size: Sequence[int], pad: int = LETTERBOX_PAD) -> tuple[np.ndarray, float]:
    """The detection letterbox: the picture scaled by ``s = min(H / h, W / w)`` to
    ``round(h * s) x round(w * s)`` (at least 1, bilinear as :func:`resize_bilinear`),
    placed at the top-left of an (H, W) frame of grey ``pad``. Returns the frame and ``s``."""
    img = _rgb(img)
    fh, fw = _size(input_size)
    h, w = img.shape[:2]
    scale = min(fh / h, fw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    frame = np.full((fh, fw, 3), pad, np.uint8)
    resized = resize_bilinear(img, (nh, nw))
    frame[:min(nh, fh), :min(nw, fw)] = resized[:fh, :fw]
    return frame, scale


def center_crop_view(img: np.ndarray, input_size: Sequence[int], resize_ratio: float = 0.875) -> np.ndarray:
    """The classification evaluation view: scaled to just cover ``input_size /
    resize_ratio`` (area averaging when an axis shrinks, else bilinear), then the centre
    ``input_size`` cut out, as the host's ``eval_transform``."""
    img = _rgb(img)
    out_h, out_w = _size(input_size)
    if not 0.0 < float(resize_ratio) <= 1.0:
        raise UsageError(f"resize_ratio must be in (0, 1], got {resize_ratio!r}")
    h, w = img.shape[:2]
    scale = max(round(out_h / resize_ratio) / h, round(out_w / resize_ratio) / w)
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) != (h, w):
        shrink = new_h < h or new_w < w
        img = resize_area(img, (new_h, new_w)) if shrink else resize_bilinear(img, (new_h, new_w))
    top, left = int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))
    return np.ascontiguousarray(img[top:top + out_h, left:left + out_w])
