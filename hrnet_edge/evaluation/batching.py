"""Calling a model callable on a batch, the same way for every task and runtime."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

InferFn = Callable[[np.ndarray], Any]


def _call(infer: InferFn, batch: np.ndarray, ndim: int, what: str) -> np.ndarray:
    out = infer(np.ascontiguousarray(batch, dtype=np.float32))
    if isinstance(out, (list, tuple)) and len(out) == 1:  # runtimes that return output lists
        out = out[0]
    out = np.asarray(out, dtype=np.float32)
    if out.ndim != ndim or out.shape[0] != batch.shape[0]:
        raise ValueError(f"infer must return {what} for {batch.shape[0]} inputs, got shape {out.shape}")
    return out


def run_batched(infer: InferFn, batch: np.ndarray, fixed_batch: int | None, ndim: int,
                what: str) -> np.ndarray:
    """``infer`` over ``batch``; with ``fixed_batch`` every call gets exactly that many
    images (artifacts with a static batch), the last call padded with copies of its last
    image whose outputs are dropped.

    Args:
        infer: NCHW float32 in, an array (or a one-element list of it) out.
        batch: (N, 3, H, W) images.
        fixed_batch: images per call, or None for one call with all of them.
        ndim: the rank every output must have (4 for heatmaps/logit maps, 2 for logits).
        what: how the output is named in the error, e.g. ``"logits (N, K)"``.
    """
    n = batch.shape[0]
    if not fixed_batch:
        return _call(infer, batch, ndim, what)
    outs = []
    for s in range(0, n, fixed_batch):
        part = batch[s:s + fixed_batch]
        if part.shape[0] < fixed_batch:
            part = np.concatenate([part, np.repeat(part[-1:], fixed_batch - part.shape[0], 0)])
        outs.append(_call(infer, part, ndim, what)[:min(fixed_batch, n - s)])
    return np.concatenate(outs)
