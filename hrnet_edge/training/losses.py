"""Losses."""
from __future__ import annotations

import torch


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Visibility-weighted MSE between heatmaps, averaged over joints (the pose
    papers' loss, scaled by 0.5 as they do).

    Args:
        pred, target: (N, K, H, W) heatmaps.
        weight: (N, K, 1) per-joint weight, 0 for unlabelled joints.
    """
    n, k = pred.shape[:2]
    diff = (pred.reshape(n, k, -1) - target.reshape(n, k, -1)) * weight
    return 0.5 * diff.pow(2).mean()
