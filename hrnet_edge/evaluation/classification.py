"""Classification evaluation of any logits-producing callable: top-k accuracy and more.

The model under test is a plain callable ``np.ndarray (N, 3, H, W) float32 RGB 0..1 ->
(N, K)`` logits, so the PyTorch model and every exported artifact are evaluated by the
same code. Nothing here imports torch. The prediction (argmax) and top-k with softmax
probabilities are the device runtime's (:mod:`hrnet_edge_runtime.decode.cls`,
re-exported here), ranked by the same rule as the accuracy below.

Ties: classes are ranked by logit, equal logits by the lower class index first, which
is the order ``np.argmax`` picks from. So ``top1`` always equals the accuracy of
``pred`` and a constant output scores the share of class 0, not 100%. A NaN logit
ranks below every number, so a model emitting NaN never scores by it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hrnet_edge_runtime.decode.cls import predict, softmax, topk

from hrnet_edge.errors import DataError
from hrnet_edge.evaluation.batching import run_batched

__all__ = ["ClsEvalResult", "class_ranks", "confusion", "evaluate_classification", "per_class_accuracy",
           "predict", "softmax", "topk", "topk_accuracy"]

InferFn = Callable[[np.ndarray], Any]
# Images decoded per dataset call: bounds memory on ImageNet's 50k images while
# keeping the per-call overhead of small batches away.
_CHUNK = 256


@dataclass
class ClsEvalResult:
    """Outcome of :func:`evaluate_classification`.

    Attributes:
        metrics: ``top1``, ``top5`` (0..1) and ``num_images``.
        pred: (N,) int64 predicted class (argmax, lowest index on ties).
        labels: (N,) int64 true class of the same images.
        logits: (N, K) float32 raw outputs when asked for, else None.
    """

    metrics: dict[str, float]
    pred: np.ndarray
    labels: np.ndarray
    logits: np.ndarray | None = field(default=None, repr=False)


def _logits_labels(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(logits, dtype=np.float64)
    lab = np.asarray(labels)
    if scores.ndim != 2 or lab.shape != (scores.shape[0],):
        raise ValueError(f"expected logits (N, K) and labels (N,), got {scores.shape} and "
                         f"{lab.shape}")
    if scores.shape[1] == 0:
        raise ValueError("logits have no class column")
    lab = lab.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1] - 1}], got "
                         f"{lab.min()}..{lab.max()}")
    return np.where(np.isnan(scores), -np.inf, scores), lab


def class_ranks(logits, labels) -> np.ndarray:
    """(N,) zero-based rank of each true class among its row's logits.

    Rank 0 is the top prediction; equal logits rank the lower class index first.
    """
    scores, lab = _logits_labels(logits, labels)
    true = scores[np.arange(len(lab)), lab][:, None]
    index = np.arange(scores.shape[1])[None, :]
    ahead = (scores > true) | ((scores == true) & (index < lab[:, None]))
    return ahead.sum(axis=1).astype(np.int64)


def topk_accuracy(logits, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy for each k in ``ks``.

    Args:
        logits: (N, K) scores.
        labels: (N,) true classes in [0, K).
        ks: the k values; a k above K counts as K (every class), so ``top5`` of a
            3-class problem is 1.0.

    Returns:
        ``{"top<k>": accuracy}`` for each k, in 0..1 (NaN when N is 0).
    """
    ranks = class_ranks(logits, labels)
    out = {}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out[f"top{int(k)}"] = float((ranks < int(k)).mean()) if ranks.size else float("nan")
    return out


def _check_pred(pred, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    p, lab = np.asarray(pred).astype(np.int64), np.asarray(labels).astype(np.int64)
    if p.shape != lab.shape or p.ndim != 1:
        raise ValueError(f"pred and labels must both be (N,), got {p.shape} and {lab.shape}")
    for name, v in (("pred", p), ("labels", lab)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes - 1}], got "
                             f"{v.min()}..{v.max()}")
    return p, lab


def confusion(pred, labels, num_classes: int) -> np.ndarray:
    """(K, K) int64 confusion matrix: row = true class, column = predicted class."""
    p, lab = _check_pred(pred, labels, num_classes)
    flat = np.bincount(lab * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(pred, labels, num_classes: int) -> np.ndarray:
    """(K,) float64 recall of each class; NaN for a class with no image."""
    cm = confusion(pred, labels, num_classes)
    support = cm.sum(axis=1)
    return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def _run(infer: InferFn, batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Logits of one batch, padded to ``fixed_batch`` when the artifact needs it."""
    return run_batched(infer, batch, fixed_batch, 2, "logits (N, K)")


def _subset(n: int, max_images: int | None) -> np.ndarray:
    """Indices evaluated: all, or ``max_images`` spread evenly over the dataset.

    Folder datasets are sorted by class, so the first ``max_images`` would often be a
    single class; even spacing keeps every class in proportion.
    """
    if max_images is None or max_images >= n:
        return np.arange(n)
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    return (np.arange(max_images) * n) // max_images


def _chunks(n: int, size: int, progress: bool):
    starts = range(0, n, size)
    if progress:
        from tqdm import tqdm

        from hrnet_edge.console import bar_stream

        starts = tqdm(starts, desc="evaluate", unit="chunk", file=bar_stream())
    return starts


def evaluate_classification(infer: InferFn, dataset, batch_size: int = 32,
                            max_images: int | None = None, keep_logits: bool = False,
                            fixed_batch: int | None = None,
                            progress: bool = False) -> ClsEvalResult:
    """Evaluate a logits callable on a classification dataset.

    Images are the dataset's eval views (:meth:`stack_images`, never augmented).

    Args:
        infer: ``(N, 3, H, W) float32 RGB 0..1 -> (N, K)`` logits (NumPy or anything
            ``np.asarray`` accepts; a one-element list is unwrapped).
        dataset: an :class:`~hrnet_edge.data.classification.ImageFolderDataset` or any
            object with ``__len__``, ``labels``, ``stack_images(indices)`` and,
            optionally, ``num_classes``.
        batch_size: images per call; the last call may get fewer.
        max_images: evaluate this many images, spread evenly over the dataset.
        keep_logits: store the (N, K) logits in the result.
        fixed_batch: the artifact takes exactly this batch: every call gets that many
            images (``batch_size`` is ignored), the last batch padded by repeating its
            final image. 1 calls ``infer`` one image at a time.
        progress: show a tqdm bar.

    Returns:
        ClsEvalResult with ``top1``, ``top5``, ``num_images`` and the predictions.

    Raises:
        DataError: the dataset is empty, or the logits' class count differs from the
            dataset's.
        ValueError: a bad argument, or ``infer`` returned the wrong shape.
    """
    step = int(fixed_batch) if fixed_batch else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size and fixed_batch must be >= 1, got {step}")
    idx = _subset(len(dataset), max_images)
    if len(idx) == 0:
        raise DataError(f"{dataset!r} has no image to evaluate")
    labels = np.asarray(dataset.labels, dtype=np.int64)[idx]
    num_classes = getattr(dataset, "num_classes", None)
    chunk = max(step, (_CHUNK // step) * step)  # whole batches per chunk
    parts = []
    for s in _chunks(len(idx), chunk, progress):
        images = dataset.stack_images(idx[s:s + chunk])
        for b in range(0, len(images), step):
            parts.append(_run(infer, images[b:b + step], step if fixed_batch else None))
            # Checked per batch: a wrong model fails at once, not after the whole set.
            if num_classes is not None and parts[-1].shape[1] != num_classes:
                raise DataError(f"the model gives {parts[-1].shape[1]} class scores but the "
                                f"dataset has {num_classes} classes; evaluate a model "
                                f"trained on these classes")
    logits = np.concatenate(parts, axis=0)
    metrics = topk_accuracy(logits, labels, ks=(1, 5))
    metrics["num_images"] = float(len(idx))
    return ClsEvalResult(metrics=metrics, pred=predict(logits), labels=labels,
                         logits=logits if keep_logits else None)
