"""Segmentation logits -> label map: bilinear upsampling (``align_corners=False``), flip
averaging and argmax, exactly as the project's mIoU evaluation does it."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hrnet_edge_runtime.decode import _meta
from hrnet_edge_runtime.decode.errors import DecodeInputError, MetadataError


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear resizing with half-pixel centres."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, None)  # as PyTorch: no extrapolation before the first centre
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (..., h, w) logits to (..., H, W), ``align_corners=False``.

    Separable NumPy interpolation matching ``torch.nn.functional.interpolate(...,
    mode="bilinear", align_corners=False)``, sampling at ``(i + 0.5) * h / H - 0.5``; it
    has no limit on the number of channels (ADE20K has 150 classes).
    """
    x = np.asarray(logits, np.float32)
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    y0, y1, wy = _axis_weights(h, size[0])
    x0, x1, wx = _axis_weights(w, size[1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def flip_average(logits: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """Flip test: the mean of the logits and those of the mirrored input, mirrored back.

    Logits are on a pixel-centre grid aligned with the input, so mirroring the mirrored
    input's logits lines them up exactly.
    """
    return 0.5 * (logits + flipped[..., ::-1])


def label_map(logits: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(N, H, W) int64 class ids: each image's (C, h, w) logits upsampled to ``size``
    and argmaxed (ties: the lower class id). One image at a time: a batch's
    full-resolution logits would take N*C*H*W floats."""
    lg = np.asarray(logits)
    if lg.ndim != 4:
        raise DecodeInputError(f"segmentation logits must be (N, C, h, w), got shape {lg.shape}")
    hw = tuple(int(v) for v in size)
    if len(hw) != 2 or min(hw) < 1:
        raise DecodeInputError(f"label map size must be two positive ints (H, W), got {tuple(size)!r}")
    if lg.shape[0] == 0:
        return np.zeros((0, *hw), np.int64)
    return np.stack([upsample_logits(one, hw).argmax(0) for one in lg])


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(..., 3) uint8 RGB image of a label map, ``palette[label]``."""
    pal = np.asarray(palette, np.uint8).reshape(-1, 3)
    lab = np.asarray(labels)
    if lab.size and lab.max() >= len(pal):
        raise DecodeInputError(f"label {int(lab.max())} has no palette colour: the palette holds {len(pal)}")
    return pal[lab]


class SegDecoder:
    """Segmentation logits -> label map, configured from a segmentation metadata.json.

    Reads ``output.num_classes``, ``output.classes``, ``output.palette`` (optional),
    ``output.layout`` and the input size.
    """

    task = "seg"

    def __init__(self, meta: dict):
        self.num_classes = _meta.count(meta, "output.num_classes")
        self.classes = _meta.names(meta, "output.classes", self.num_classes)
        palette = _meta.get(meta, "output.palette", [])
        if palette and (not isinstance(palette, list) or len(palette) != self.num_classes
                        or any(not isinstance(c, list) or len(c) != 3 for c in palette)):
            raise MetadataError("output.palette", f"must hold {self.num_classes} [r, g, b] colours "
                                "(one per class) or be empty")
        self.palette = palette
        self.layout = _meta.channel_layout(meta)
        self.input_size = _meta.input_hw(meta)

    def _nchw(self, raw: Any, key: str) -> np.ndarray:
        return _meta.as_nchw(raw, self.layout, self.num_classes, key, "logits")

    def decode(self, raw: Any, context: dict | None = None) -> dict:
        """Label maps of N images.

        Args:
            raw: the artifact's output, (N, C, h, w) or (N, h, w, C) as ``output.layout``
                says (one image may drop N).
            context: optional ``size``: the (H, W) of the label map (the original image's
                size; default the model input's), and ``flipped``: the raw output of the
                mirrored image, averaged in (flip test).

        Returns:
            ``labels`` (N, H, W) uint8 (int32 beyond 256 classes); ``classes``;
            ``palette`` (the metadata's, possibly empty).
        """
        context = dict(context or {})
        logits = self._nchw(raw, "raw")
        if context.get("flipped") is not None:
            flipped = self._nchw(context["flipped"], "context['flipped']")
            if flipped.shape != logits.shape:
                raise DecodeInputError(f"context['flipped'] has shape {flipped.shape}, the output "
                                       f"{logits.shape}: both must come from the same images")
            logits = flip_average(logits, flipped)
        size = context.get("size")
        labels = label_map(logits, self.input_size if size is None else size)
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        return {"labels": labels.astype(dtype), "classes": list(self.classes), "palette": self.palette}
