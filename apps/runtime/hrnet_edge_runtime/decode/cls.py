"""Classification logits -> top-k classes with softmax probabilities.

Ranking is the one the project's top-k accuracy uses: by logit, equal logits the lower
class index first (the order ``argmax`` picks from), and a NaN logit below every number.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hrnet_edge_runtime.decode import _meta
from hrnet_edge_runtime.decode.errors import DecodeInputError

DEFAULT_TOPK = 5


def _scores(logits: Any) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise DecodeInputError(f"classification logits must be (N, K) with K >= 1, got shape {x.shape}")
    return np.where(np.isnan(x), -np.inf, x)


def softmax(logits: Any) -> np.ndarray:
    """(N, K) float64 probabilities of (N, K) logits, computed stably (max subtracted).

    A NaN logit gets probability 0; a row with no finite logit gets all zeros.
    """
    x = _scores(logits)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0.0))
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=(total > 0) & np.isfinite(total))


def topk(logits: Any, k: int = DEFAULT_TOPK) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best classes of each row and their softmax probabilities.

    Args:
        logits: (N, K).
        k: classes kept per row; a k above K keeps all K.

    Returns:
        indices (N, min(k, K)) int64, best first (ties: lower index), and probabilities
        (N, min(k, K)) float64 of those classes.

    Raises:
        DecodeInputError: logits are not (N, K), or k is not a positive integer.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DecodeInputError(f"top-k needs a positive integer k, got {k!r}")
    x = _scores(logits)
    idx = np.argsort(-x, axis=1, kind="stable")[:, :int(k)].astype(np.int64)
    return idx, np.take_along_axis(softmax(x), idx, axis=1)


def predict(logits: Any) -> np.ndarray:
    """(N,) int64 best class of (N, K) logits (NaN ranks last, ties to the lower index)."""
    return _scores(logits).argmax(axis=1).astype(np.int64)


class ClsDecoder:
    """Class logits -> top-k, configured from a classification metadata.json.

    Reads ``output.num_classes`` and ``output.classes``.
    """

    task = "cls"

    def __init__(self, meta: dict):
        self.num_classes = _meta.count(meta, "output.num_classes")
        self.classes = _meta.names(meta, "output.classes", self.num_classes)

    def decode(self, raw: Any, context: dict | None = None) -> dict:
        """Top-k of N images.

        Args:
            raw: the artifact's output, (N, K) (one image may drop N).
            context: optional ``k`` (default 5, at most K).

        Returns:
            ``indices`` (N, k) int64, ``probabilities`` (N, k) float32, ``labels``
            (N lists of k class names).
        """
        logits = np.asarray(raw)
        if logits.ndim == 1:
            logits = logits[None]
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise DecodeInputError(f"raw must be logits (N, K) with K = {self.num_classes}, got shape "
                                   f"{np.shape(raw)}")
        idx, prob = topk(logits, (context or {}).get("k", DEFAULT_TOPK))
        return {"indices": idx, "probabilities": prob.astype(np.float32),
                "labels": [[self.classes[i] for i in row] for row in idx.tolist()]}
