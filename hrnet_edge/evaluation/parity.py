"""How far one model output is from another, on the reference's own scale."""
from __future__ import annotations

import numpy as np


def parity_stats(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Compare an output with its reference, on the reference's own scale.

    Returns:
        ``max_abs`` and ``mean_abs`` (absolute), ``rel_max_abs`` (max_abs over the
        reference's range, so heatmaps in 0..1 and logits in -20..20 share one
        threshold), ``psnr_db`` (peak = the reference's range) and ``cosine``.
    """
    ref = np.asarray(ref, dtype=np.float64).ravel()
    out = np.asarray(out, dtype=np.float64).ravel()
    if ref.shape != out.shape:
        raise ValueError(f"output has {out.size} values, reference {ref.size}")
    diff = out - ref
    mse = float(np.mean(diff**2))
    peak = float(ref.max() - ref.min()) or 1.0
    denom = float(np.linalg.norm(ref) * np.linalg.norm(out)) or 1.0
    max_abs = float(np.abs(diff).max())
    return {
        "max_abs": max_abs,
        "mean_abs": float(np.abs(diff).mean()),
        "rel_max_abs": max_abs / peak,
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse)),
        "cosine": float(np.dot(ref, out) / denom),
    }
