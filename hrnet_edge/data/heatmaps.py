"""Affine crops, Gaussian heatmap targets and heatmap decoding.

Decoding and the crop geometry (:func:`decode_heatmaps`, :func:`flip_heatmaps`,
:func:`heatmap_to_image`, :func:`get_affine_transform`, :func:`affine_points`, the
input/heatmap coordinate maps) live in the torch-free runtime,
:mod:`hrnet_edge_runtime.decode.pose`, which the device runner uses too; they are
re-exported here, so training, evaluation and every device decode by one source. Its
docstring states the coordinate conventions (pixel-index points, centre-to-centre crops,
heatmap pixel k covering input pixels ``[k*s, (k+1)*s)``), which exported metadata
repeats. This module adds what only the data side needs: Gaussian targets, image warps and
the affine compositions of augmentation.
"""
from __future__ import annotations

import cv2
import numpy as np

from hrnet_edge_runtime.decode.pose import (
    DECODERS,
    affine_points,
    decode_heatmaps,
    flip_heatmaps,
    get_affine_transform,
    heatmap_to_image,
    heatmap_to_input,
    input_to_heatmap,
    invert_affine,
)

__all__ = ["DECODERS", "affine_points", "compose_affine", "decode_heatmaps", "flip_heatmaps",
           "gaussian_targets", "get_affine_transform", "heatmap_to_image", "heatmap_to_input",
           "hflip_affine", "input_to_heatmap", "invert_affine", "warp_crop"]


def hflip_affine(width: int) -> np.ndarray:
    """2x3 matrix of a horizontal flip of an image ``width`` pixels wide."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 matrix applying ``inner`` first, then ``outer``."""
    full = np.vstack([inner, [0.0, 0.0, 1.0]])
    return np.asarray(outer, dtype=np.float64) @ full


def warp_crop(image: np.ndarray, mat: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Crop ``image`` (HWC) with a 2x3 matrix to ``output_size`` (H, W), zero borders."""
    out_h, out_w = output_size
    return cv2.warpAffine(image, mat, (int(out_w), int(out_h)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


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
