"""Pose heatmaps -> keypoints: sub-pixel decoding, flip averaging and the crop affine.

Coordinate conventions (the same ones are written into exported metadata, so an app
in another language can decode outputs exactly like :func:`decode_heatmaps`):

* Points are in *pixel-index* coordinates: the centre of pixel (i, j) is (x=j, y=i).
* A crop maps the image box of size ``scale`` (w, h) around ``center`` to the model
  input, centre to centre: ``input = R(rot) (p - center) * (W / scale_w) + ((W-1)/2, (H-1)/2)``.
* The heatmap pixel k covers input pixels ``[k*s, (k+1)*s)`` with stride ``s = W / w``,
  so ``x_heatmap = (x_input + 0.5) / s - 0.5``. This alignment makes a horizontal flip of
  the heatmap exactly the flip of the input, so flip testing needs no one-pixel shift.

NumPy only: the DARK smoothing is a separable Gaussian with replicated edges, the same
filter as an OpenCV ``GaussianBlur`` with ``BORDER_REPLICATE`` (a test compares them).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hrnet_edge_runtime.decode import _meta
from hrnet_edge_runtime.decode.errors import DecodeConfigError, DecodeInputError, MetadataError

DECODERS = ("dark", "quarter")
# A person box grows by this factor around its centre before cropping (HRNet's 1.25).
CROP_PADDING = 1.25


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
        float64 array (2, 3), usable with any 2x3 image warp and :func:`affine_points`.
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


def affine_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points of shape (..., 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ mat[:, :2].T + mat[:, 2]


def _stride(input_size, heatmap_size) -> np.ndarray:
    """(sx, sy) input pixels per heatmap pixel."""
    return np.array([input_size[1] / heatmap_size[1], input_size[0] / heatmap_size[0]])


def input_to_heatmap(points: np.ndarray, input_size, heatmap_size) -> np.ndarray:
    """Map input-pixel coordinates (..., 2) to heatmap-pixel coordinates."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / _stride(input_size, heatmap_size) - 0.5


def heatmap_to_input(points: np.ndarray, input_size, heatmap_size) -> np.ndarray:
    """Map heatmap-pixel coordinates (..., 2) to input-pixel coordinates."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * _stride(input_size, heatmap_size) - 0.5


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

    Raises:
        DecodeInputError: heatmaps are not 4-D.
        DecodeConfigError: unknown method.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4:
        raise DecodeInputError(f"heatmaps must be (N, K, h, w), got shape {hm.shape}")
    if method == "dark":
        return _decode_dark(hm, sigma)
    if method != "quarter":
        raise DecodeConfigError(f"unknown heatmap decoder {method!r}; valid: {', '.join(DECODERS)}")
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


def gaussian_blur(hm: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes, radius ``round(3 * sigma)``, edges
    replicated, float32 taps normalised to sum 1 (the DARK smoothing)."""
    radius = max(1, int(round(3 * sigma)))
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2.0 * sigma**2)).astype(np.float32)
    taps /= taps.sum()
    sm = hm
    for axis in (hm.ndim - 2, hm.ndim - 1):
        pad = [(0, 0)] * hm.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(sm, pad, mode="edge")
        size = sm.shape[axis]
        sm = sum(t * np.take(padded, np.arange(i, i + size), axis=axis) for i, t in enumerate(taps))
    return sm


def _decode_dark(hm: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    if not np.isfinite(sigma) or sigma <= 0:
        raise DecodeConfigError(f"the dark decoder needs a positive target sigma, got {sigma!r}")
    n, k, h, w = hm.shape
    px, py, maxvals = _argmax(hm)
    coords = np.stack([px, py], axis=-1).astype(np.float64)
    if h < 3 or w < 3:
        return coords.astype(np.float32), maxvals.astype(np.float32)
    # Smooth (the network's maps are not exact Gaussians), keeping each map's peak.
    sm = gaussian_blur(hm, sigma)
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


def flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """Index array ``p`` such that ``flipped[..., j] = original[..., p[j]]`` swaps sides.

    Raises:
        DecodeConfigError: a pair is not two joint indices in 0..num_joints-1.
    """
    perm = np.arange(num_joints)
    for pair in flip_pairs:
        if (len(pair) != 2 or not all(isinstance(j, (int, np.integer)) and 0 <= j < num_joints
                                      for j in pair)):
            raise DecodeConfigError(f"flip pair {list(pair)!r} must be two joint indices in "
                                    f"0..{num_joints - 1}")
        a, b = pair
        perm[a], perm[b] = b, a
    return perm


def flip_heatmaps(heatmaps: np.ndarray, flip_perm: np.ndarray) -> np.ndarray:
    """Undo a horizontal flip of the input on its heatmaps (N, K, h, w): mirror and swap sides."""
    return np.ascontiguousarray(heatmaps[:, flip_perm, :, ::-1])


def flip_average(heatmaps: np.ndarray, flipped: np.ndarray, flip_perm: np.ndarray) -> np.ndarray:
    """Flip test: the mean of the heatmaps and those of the mirrored input, mirrored back."""
    return 0.5 * (heatmaps + flip_heatmaps(flipped, flip_perm))


def person_scores(maxvals: np.ndarray, threshold: float) -> np.ndarray:
    """HRNet's rescoring: per crop, the mean peak over joints whose peak is above
    ``threshold`` (0 when none is). ``maxvals`` is (N, K) or (N, K, 1)."""
    peak = np.asarray(maxvals).reshape(np.shape(maxvals)[0], -1)
    above = peak > threshold
    return np.where(above.any(1), (peak * above).sum(1) / np.maximum(above.sum(1), 1), 0.0)


def box_to_crop(bbox: Sequence[float], input_size: Sequence[int], padding: float = CROP_PADDING) -> dict:
    """The crop context of a person box, as the project's evaluation crops it.

    The box (x, y, w, h) is grown on its short side to the input's aspect ratio, then by
    ``padding``, around its centre.

    Returns:
        ``{"center": [cx, cy], "scale": [w, h]}``, the context :meth:`PoseDecoder.decode`
        takes (and the box to crop the model input from).

    Raises:
        DecodeInputError: not four finite numbers with positive w and h.
    """
    box = np.asarray(bbox, np.float64)
    if box.shape != (4,) or not np.isfinite(box).all() or min(box[2], box[3]) <= 0:
        raise DecodeInputError(f"a person box must be four finite numbers x, y, w, h with w, h > 0, "
                               f"got {bbox!r}")
    x, y, w, h = box
    aspect = input_size[1] / input_size[0]
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return {"center": [x + box[2] * 0.5, y + box[3] * 0.5], "scale": [w * padding, h * padding]}


def _per_crop(context: dict, key: str, n: int, width: int | None) -> np.ndarray:
    """Context value ``key`` as (n, width) (or (n,) when width is None), one row per crop."""
    one = (width,) if width else ()
    try:
        v = np.asarray(context[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise DecodeInputError(f"context[{key!r}] must hold numbers, got {context[key]!r}") from None
    if v.shape == one:
        v = np.broadcast_to(v, (n, *one))
    if v.shape != (n, *one) or not np.isfinite(v).all():
        raise DecodeInputError(f"context[{key!r}] must be finite, shaped {one or 'a scalar'} or "
                               f"({n}{', ' + str(width) if width else ''}) for {n} crops, got {v.shape}")
    return v


class PoseDecoder:
    """Keypoint heatmaps -> keypoints (x, y, score), configured from a pose metadata.json.

    Reads ``output.decoding.decoder``, ``output.decoding.target_sigma``,
    ``output.decoding.score_threshold``, ``output.num_keypoints``,
    ``output.keypoint_names``, ``output.flip_pairs``, ``output.layout`` and the input size.
    """

    task = "pose"

    def __init__(self, meta: dict):
        self.method = _meta.get(meta, "output.decoding.decoder")
        if self.method not in DECODERS:
            raise MetadataError("output.decoding.decoder",
                                f"{self.method!r} is not known; valid: {', '.join(DECODERS)}")
        self.sigma = _meta.number(meta, "output.decoding.target_sigma", positive=True)
        self.score_threshold = _meta.number(meta, "output.decoding.score_threshold")
        self.num_keypoints = _meta.count(meta, "output.num_keypoints")
        self.keypoint_names = _meta.names(meta, "output.keypoint_names", self.num_keypoints)
        try:
            self.flip_perm = flip_permutation(self.num_keypoints, _meta.get(meta, "output.flip_pairs", []))
        except DecodeConfigError as exc:
            raise MetadataError("output.flip_pairs", str(exc)) from None
        self.layout = _meta.channel_layout(meta)
        self.input_size = _meta.input_hw(meta)

    def _nchw(self, raw: Any, key: str) -> np.ndarray:
        return _meta.as_nchw(raw, self.layout, self.num_keypoints, key, "heatmaps")

    def decode(self, raw: Any, context: dict | None = None) -> dict:
        """Keypoints of N person crops.

        Args:
            raw: the artifact's output, (N, K, h, w) or (N, h, w, K) as ``output.layout``
                says (a single crop may drop N).
            context: ``center`` (x, y) and ``scale`` (w, h) of each crop's box in the
                original image ((2,) for all crops or (N, 2)), optional ``rotation``
                (degrees, scalar or (N,)) and optional ``flipped``: the raw output of the
                mirrored crops, averaged in (flip test). Without ``center``/``scale`` the
                keypoints stay in model-input pixels.

        Returns:
            ``keypoints`` (N, K, 3) float32 x, y, peak score; ``person_scores`` (N,)
            float32; ``keypoint_names``; ``coordinates``: ``"image"`` or ``"input"``.
        """
        context = dict(context or {})
        hm = self._nchw(raw, "raw")
        if context.get("flipped") is not None:
            flipped = self._nchw(context["flipped"], "context['flipped']")
            if flipped.shape != hm.shape:
                raise DecodeInputError(f"context['flipped'] has shape {flipped.shape}, the output "
                                       f"{hm.shape}: both must come from the same crops")
            hm = flip_average(hm, flipped, self.flip_perm)
        coords, maxvals = decode_heatmaps(hm, self.method, self.sigma)
        n, hw = hm.shape[0], hm.shape[2:]
        if "center" in context or "scale" in context:
            missing = [k for k in ("center", "scale") if k not in context]
            if missing:
                raise DecodeInputError(f"context lacks {missing[0]!r}: give both 'center' and "
                                       "'scale' of the crop boxes, or neither")
            scales = _per_crop(context, "scale", n, 2)
            if (scales <= 0).any():
                raise DecodeInputError(f"context['scale'] must be positive box sizes (w, h), "
                                       f"got {scales.tolist()}")
            rot = _per_crop(context, "rotation", n, None) if "rotation" in context else None
            xy = heatmap_to_image(coords, _per_crop(context, "center", n, 2), scales,
                                  self.input_size, hw, rot)
            space = "image"
        else:
            xy, space = heatmap_to_input(coords, self.input_size, hw), "input"
        return {"keypoints": np.concatenate([xy, maxvals], axis=-1).astype(np.float32),
                "person_scores": person_scores(maxvals, self.score_threshold).astype(np.float32),
                "keypoint_names": list(self.keypoint_names), "coordinates": space}
