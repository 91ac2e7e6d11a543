"""Reading the keys of ``metadata.json`` the decoders need, with typed errors."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hrnet_edge_runtime.decode.errors import DecodeInputError, MetadataError

_MISSING = object()


def get(meta: dict, path: str, default: Any = _MISSING) -> Any:
    """The value at dotted ``path`` (``"output.decoding.config"``) of ``meta``.

    Raises:
        MetadataError: a key on the way is missing (and no default was given) or a
            step is not an object.
    """
    node: Any = meta
    walked = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(node, dict):
            raise MetadataError(".".join(walked[:-1]), f"must be an object, got {type(node).__name__}")
        if part not in node:
            if default is not _MISSING:
                return default
            have = ", ".join(sorted(map(str, node))) or "nothing"
            raise MetadataError(".".join(walked), f"is missing (that level holds: {have})")
        node = node[part]
    return node


def number(meta: dict, path: str, default: Any = _MISSING, positive: bool = False) -> float:
    """A finite number at ``path`` (bool is not a number here)."""
    v = get(meta, path, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
        raise MetadataError(path, f"must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise MetadataError(path, f"must be > 0, got {v!r}")
    return float(v)


def names(meta: dict, path: str, count: int) -> list[str]:
    """A list of ``count`` strings at ``path`` (class or keypoint names)."""
    v = get(meta, path)
    if not isinstance(v, list) or len(v) != count or not all(isinstance(s, str) for s in v):
        got = f"{len(v)} entries" if isinstance(v, list) else repr(v)
        raise MetadataError(path, f"must list {count} names (one per output channel), got {got}")
    return list(v)


def count(meta: dict, path: str) -> int:
    """A positive integer at ``path``."""
    v = get(meta, path)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise MetadataError(path, f"must be a positive integer, got {v!r}")
    return v


def input_hw(meta: dict) -> tuple[int, int]:
    """The model input (H, W), following ``input.layout`` (NCHW, NHWC, or an image input
    with ``height`` and ``width``)."""
    inp = get(meta, "input")
    layout = get(meta, "input.layout")
    if isinstance(inp, dict) and "height" in inp and "width" in inp:
        hw: Sequence[Any] = (inp["height"], inp["width"])
        key = "input.height/width"
    else:
        shape = get(meta, "input.shape")
        axes = {"NCHW": (2, 3), "NHWC": (1, 2)}.get(layout)
        if axes is None:
            raise MetadataError("input.layout", f"{layout!r} is not known; valid: NCHW, NHWC, or an "
                                "image input with height and width")
        if not isinstance(shape, list) or len(shape) != 4:
            raise MetadataError("input.shape", f"must be 4 dimensions for layout {layout}, got {shape!r}")
        hw, key = (shape[axes[0]], shape[axes[1]]), "input.shape"
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise MetadataError(key, f"must give a positive integer height and width, got {list(hw)!r}")
    return int(hw[0]), int(hw[1])


def channel_layout(meta: dict) -> str:
    """``output.layout`` of a map output: ``"NCHW"`` or ``"NHWC"``."""
    layout = get(meta, "output.layout")
    if layout not in ("NCHW", "NHWC"):
        raise MetadataError("output.layout", f"{layout!r} is not known for this output; valid: NCHW, NHWC")
    return layout


def as_nchw(raw: Any, layout: str, channels: int, key: str, what: str) -> np.ndarray:
    """A per-pixel output (N, C, h, w) or (N, h, w, C) as ``layout`` says, one image
    allowed without N, returned as float32 NCHW; a DecodeInputError naming ``key`` and
    the expected shape otherwise (``what``: "heatmaps" with K, "logits" with C)."""
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    axis = 1 if layout == "NCHW" else 3
    if arr.ndim != 4 or arr.shape[axis] != channels:
        c = "K" if what == "heatmaps" else "C"
        want = f"(N, {c}, h, w)" if layout == "NCHW" else f"(N, h, w, {c})"
        raise DecodeInputError(f"{key} must be {what} {want} with {c} = {channels} "
                               f"(output.layout {layout}), got shape {arr.shape}")
    return arr if layout == "NCHW" else np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
