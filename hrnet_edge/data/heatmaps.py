"""Affine crops, Gaussian heatmap targets and heatmap decoding.

Coordinate conventions (the same ones are written into exported metadata, so an app
in another language can decode outputs exactly like :func:`decode_heatmaps`):

* Points are in *pixel-index* coordinates: the centre of pixel (i, j) is (x=j, y=i).
* A crop maps the image box of size ``scale`` (w, h) around ``center`` to the model
  input, centre to centre: ``input = R(rot) (p - center) * (W / scale_w) + ((W-1)/2, (H-1)/2)``.
* The heatmap pixel k covers input pixels ``[k*s, (k+1)*s)`` with stride ``s = W / w``,
  so ``x_heatmap = (x_input + 0.5) / s - 0.5``. This alignment makes a horizontal flip of
  the heatmap exactly the flip of the input, so flip testing needs no one-pixel shift
  (which the original HRNet code has to apply because it uses ``x_input / s``).
"""
from __future__ import annotations

import cv2
import numpy as np


def get_affine_transform(center, scale, rotation: float, output_size: tuple[int, int],
                         inverse: bool = False) -> np.ndarray:
    """2x3 affine matrix from image coordinates to crop coordinates (or back).

    Args:
        center: (x, y) of the box centre in the image.
        scale: (w, h) of the box in image pixels; its aspect should match the output's.
        rotation: degrees, counter-clockwise in the image as displayed.
        output_size: (H, W) of the crop.
        inverse: return the crop -> image transform instead.

    Returns:
        float64 array (2, 3) usable with ``cv2.warpAffine`` and :func:`affine_points`.
    """
    out_h, out_w = output_size
    cx, cy = float(center[0]), float(center[1])
    k = out_w / float(scale[0])
    theta = np.deg2rad(rotation)
    # Image y points down, so a counter-clockwise turn on screen is this rotation.
    cos, sin = np.cos(theta), np.sin(theta)
    a = k * np.array([[cos, sin], [-sin, cos]])
    t = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0]) - a @ np.array([cx, cy])
    mat = np.concatenate([a, t[:, None]], axis=1)
    return invert_affine(mat) if inverse else mat


def invert_affine(mat: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(mat, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def hflip_affine(width: int) -> np.ndarray:
    """2x3 matrix of a horizontal flip of an image ``width`` pixels wide."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 matrix applying ``inner`` first, then ``outer``."""
    full = np.vstack([inner, [0.0, 0.0, 1.0]])
    return np.asarray(outer, dtype=np.float64) @ full


def affine_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points of shape (..., 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ mat[:, :2].T + mat[:, 2]


def warp_crop(image: np.ndarray, mat: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Crop ``image`` (HWC) with a 2x3 matrix to ``output_size`` (H, W), zero borders."""
    out_h, out_w = output_size
    return cv2.warpAffine(image, mat, (int(out_w), int(out_h)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _stride(input_size, heatmap_size) -> np.ndarray:
    """(sx, sy) input pixels per heatmap pixel."""
    return np.array([input_size[1] / heatmap_size[1], input_size[0] / heatmap_size[0]])


def input_to_heatmap(points: np.ndarray, input_size, heatmap_size) -> np.ndarray:
    """Map input-pixel coordinates (..., 2) to heatmap-pixel coordinates."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / _stride(input_size, heatmap_size) - 0.5


def heatmap_to_input(points: np.ndarray, input_size, heatmap_size) -> np.ndarray:
    """Map heatmap-pixel coordinates (..., 2) to input-pixel coordinates."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * _stride(input_size, heatmap_size) - 0.5


def gaussian_targets(joints: np.ndarray, visibility: np.ndarray, input_size: tuple[int, int],
                     heatmap_size: tuple[int, int] | None = None,
                     sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmap targets for one person.

    The Gaussian is centred on the exact sub-pixel position (not rounded), so decoding
    an ideal target gives back the position to within the quarter-pixel refinement.

    Args:
        joints: (K, 2) keypoints in input-pixel coordinates.
        visibility: (K,) COCO visibility (0 unlabelled, 1 occluded, 2 visible).
        input_size: (H, W) of the model input.
        heatmap_size: (h, w); defaults to input_size / 4.
        sigma: standard deviation in heatmap pixels.

    Returns:
        target (K, h, w) float32 with peak 1, target_weight (K, 1) float32: 1 for a
        labelled keypoint whose peak lies inside the heatmap, else 0 (and an all-zero map).
    """
    if heatmap_size is None:
        heatmap_size = (input_size[0] // 4, input_size[1] // 4)
    h, w = heatmap_size
    k = joints.shape[0]
    target = np.zeros((k, h, w), dtype=np.float32)
    weight = np.zeros((k, 1), dtype=np.float32)
    mu = input_to_heatmap(joints, input_size, heatmap_size)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    for j in range(k):
        x, y = mu[j]
        # Keypoints whose peak falls outside the map would teach a truncated blob.
        if visibility[j] <= 0 or not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
            continue
        gx = np.exp(-((xs - x) ** 2) / (2 * sigma**2))
        gy = np.exp(-((ys - y) ** 2) / (2 * sigma**2))
        target[j] = gy[:, None] * gx[None, :]
        weight[j, 0] = 1.0
    return target, weight


DECODERS = ("dark", "quarter")


def decode_heatmaps(heatmaps: np.ndarray, method: str = "dark",
                    sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Peak position per joint, refined to sub-pixel precision.

    Methods:
        ``"dark"`` (default): distribution-aware refinement. The heatmap is smoothed
        with a Gaussian of the target's ``sigma`` (rescaled to keep its peak), its
        logarithm taken, and one Newton step of the second-order Taylor expansion
        around the argmax gives the offset. On an ideal Gaussian target the log is
        exactly quadratic, so the true centre comes back to float precision; at the
        low heatmap resolutions of edge models this matters (a face keypoint's OKS
        tolerance is under one heatmap pixel at 128x96 input).
        ``"quarter"``: argmax plus a quarter-pixel shift toward the higher neighbour
        (the original HRNet decoding).

    Args:
        heatmaps: (N, K, h, w) array.
        method: one of :data:`DECODERS`.
        sigma: the Gaussian sigma the targets were drawn with (``"dark"`` only).

    Returns:
        coords (N, K, 2) float32 in heatmap-pixel coordinates (x, y), and maxvals
        (N, K, 1) float32, the peak values (used as keypoint scores).
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, h, w), got shape {hm.shape}")
    if method == "dark":
        return _decode_dark(hm, sigma)
    if method != "quarter":
        raise ValueError(f"unknown heatmap decoder {method!r}; valid: {', '.join(DECODERS)}")
    n, k, h, w = hm.shape
    px, py, maxvals = _argmax(hm)
    coords = np.stack([px, py], axis=-1).astype(np.float32)
    # Neighbour differences, only where both neighbours exist (as the HRNet reference).
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    inner_x = (px > 0) & (px < w - 1)
    inner_y = (py > 0) & (py < h - 1)
    dx = hm[ni, ki, py, np.clip(px + 1, 0, w - 1)] - hm[ni, ki, py, np.clip(px - 1, 0, w - 1)]
    dy = hm[ni, ki, np.clip(py + 1, 0, h - 1), px] - hm[ni, ki, np.clip(py - 1, 0, h - 1), px]
    coords[..., 0] += np.where(inner_x, np.sign(dx) * 0.25, 0.0)
    coords[..., 1] += np.where(inner_y, np.sign(dy) * 0.25, 0.0)
    # A flat (all-zero) map has no peak; its score is 0 and its position arbitrary.
    return coords, maxvals.astype(np.float32)


def _argmax(hm: np.ndarray):
    """Integer peak column, row and peak value (N, K, 1) of each (N, K, h, w) map."""
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)
    return (idx % w).astype(np.int64), (idx // w).astype(np.int64), maxvals


def _decode_dark(hm: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    n, k, h, w = hm.shape
    px, py, maxvals = _argmax(hm)
    coords = np.stack([px, py], axis=-1).astype(np.float64)
    if h < 3 or w < 3:
        return coords.astype(np.float32), maxvals.astype(np.float32)
    # Smooth (the network's maps are not exact Gaussians), keeping each map's peak.
    radius = max(1, int(round(3 * sigma)))
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2.0 * sigma**2)).astype(np.float32)
    taps /= taps.sum()
    sm = hm
    for axis in (2, 3):  # separable blur, edges replicated
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(sm, pad, mode="edge")
        size = sm.shape[axis]
        sm = sum(t * np.take(padded, np.arange(i, i + size), axis=axis) for i, t in enumerate(taps))
    peak_sm = sm.reshape(n, k, -1).max(axis=2)[..., None, None]
    scale = np.where(peak_sm > 0, maxvals[..., None] / np.maximum(peak_sm, 1e-12), 0.0)
    logm = np.log(np.maximum(sm * scale, 1e-10)).astype(np.float64)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    x0, y0 = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)

    def at(dy, dx):
        return logm[ni, ki, y0 + dy, x0 + dx]

    c = at(0, 0)
    gx, gy = 0.5 * (at(0, 1) - at(0, -1)), 0.5 * (at(1, 0) - at(-1, 0))
    hxx, hyy = at(0, 1) - 2 * c + at(0, -1), at(1, 0) - 2 * c + at(-1, 0)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    # A maximum has a negative definite Hessian; elsewhere keep the integer peak.
    ok = (det > 1e-12) & (hxx < 0) & (px == x0) & (py == y0) & (maxvals[..., 0] > 0)
    safe = np.where(ok, det, 1.0)
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(hxx * gy - hxy * gx) / safe
    ok &= (np.abs(ox) <= 1.0) & (np.abs(oy) <= 1.0)
    coords[..., 0] += np.where(ok, ox, 0.0)
    coords[..., 1] += np.where(ok, oy, 0.0)
    return coords.astype(np.float32), maxvals.astype(np.float32)


def heatmap_to_image(coords: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                     input_size: tuple[int, int], heatmap_size: tuple[int, int],
                     rotations: np.ndarray | None = None) -> np.ndarray:
    """Map heatmap coordinates of N crops back to image coordinates.

    Args:
        coords: (N, K, 2) heatmap-pixel coordinates.
        centers: (N, 2) crop centres; scales: (N, 2) crop sizes (w, h) in image pixels.
        input_size, heatmap_size: (H, W) of the model input and of its heatmaps.
        rotations: (N,) degrees used for the crops; zeros when omitted.

    Returns:
        (N, K, 2) float64 image coordinates.
    """
    inp = heatmap_to_input(coords, input_size, heatmap_size)
    out = np.empty_like(inp)
    for i in range(inp.shape[0]):
        rot = 0.0 if rotations is None else float(rotations[i])
        inv = get_affine_transform(centers[i], scales[i], rot, input_size, inverse=True)
        out[i] = affine_points(inp[i], inv)
    return out


def flip_heatmaps(heatmaps: np.ndarray, flip_perm: np.ndarray) -> np.ndarray:
    """Undo a horizontal flip of the input on its heatmaps (N, K, h, w): mirror and swap sides."""
    return np.ascontiguousarray(heatmaps[:, flip_perm, :, ::-1])
