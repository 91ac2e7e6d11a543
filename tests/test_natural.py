"""Natural photos for the label-free parity comparison, and the task agreements on them."""
from __future__ import annotations

import numpy as np
import pytest

from hrnet_edge.data.natural import natural_images, photo_paths
from hrnet_edge.tasks import get_task

pytest.importorskip("cv2", reason="opencv is not installed")


def test_photos_ship_with_the_dependencies():
    names = {p.name for p in photo_paths()}
    assert "grace_hopper.jpg" in names  # matplotlib is a core dependency


def test_natural_images_are_real_crops():
    x = natural_images(6, (128, 96), seed=3)
    assert x.shape == (6, 3, 128, 96) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(x, natural_images(6, (128, 96), seed=3))  # seeded
    assert not np.array_equal(x, natural_images(6, (128, 96), seed=4))
    # photos, not flat fills: every crop has texture, and neighbouring pixels correlate
    assert (x.reshape(6, -1).std(1) > 0.05).all()
    a, b = x[..., :, :-1].ravel(), x[..., :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8


def test_output_agreement_per_task():
    rng = np.random.default_rng(0)
    seg = rng.normal(size=(2, 19, 8, 8))
    assert get_task("seg").output_agreement(seg, seg) == 1.0
    other = seg.copy()
    other[0, :, 0, 0] = 0
    other[0, 5, 0, 0] = 100  # one pixel's class changes
    assert get_task("seg").output_agreement(seg, other) == pytest.approx(1 - 1 / 128)
    logits = np.array([[0.1, 2.0, 0.3], [1.0, 0.0, 0.5]])
    assert get_task("cls").output_agreement(logits, logits[:, [0, 1, 2]]) == 1.0
    assert get_task("cls").output_agreement(logits, logits[:, [1, 0, 2]]) == 0.0
    heat = np.zeros((1, 2, 10, 10))
    heat[0, 0, 4, 4] = heat[0, 1, 2, 2] = 1
    moved = np.zeros_like(heat)
    moved[0, 0, 5, 5] = 1  # one pixel off: agrees
    moved[0, 1, 2, 5] = 1  # three pixels off: does not
    assert get_task("pose").output_agreement(heat, moved) == 0.5
    # only the confident heatmap counts: peak 1.0 agrees, a flat 0.05 peak that moved does not count
    heat[0, 1] *= 0.05
    assert get_task("pose").confident_agreement(heat, moved) == (1.0, 1)
    assert get_task("pose").confident_agreement(heat * 0.1, moved) is None
    assert get_task("seg").confident_agreement(seg, other) is None
