"""Semantic segmentation metrics of any logits-producing callable: mIoU and accuracies.

The model under test is a plain callable ``np.ndarray (N, 3, H, W) float32 RGB 0..1 ->
np.ndarray (N, K, h, w)`` logits (stride 4 for HRNetV2), so the PyTorch model and every
exported artifact are evaluated by the same code. Logits are upsampled bilinearly to
the label size (``align_corners=False``, as PyTorch's ``F.interpolate``) before the
argmax, and pixels accumulate into one confusion matrix over the whole set, so mIoU is
the dataset-level IoU as Cityscapes reports it, not a mean of per-image IoUs.
Nothing here imports torch; upsampling, flip averaging and the argmax are the device
runtime's (:mod:`hrnet_edge_runtime.decode.seg`, re-exported here), so the checks and a
device decode alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hrnet_edge_runtime.decode.seg import flip_average, label_map, upsample_logits
# The device runner computes mIoU with the same code (hrnet-edge-run --labels).
from hrnet_edge_runtime.metrics import confusion_matrix, seg_metrics

from hrnet_edge.errors import DataError
from hrnet_edge.evaluation.batching import run_batched

__all__ = ["SegEvalResult", "confusion_matrix", "evaluate_segmentation", "flip_average", "label_map",
           "seg_metrics", "upsample_logits"]

InferFn = Callable[[np.ndarray], Any]


@dataclass
class SegEvalResult:
    """Outcome of :func:`evaluate_segmentation`.

    Attributes:
        metrics: see :func:`seg_metrics`, plus ``num_images``.
        labels_pred: (N, H, W) uint8 predicted class ids at the input resolution.
        logits: (N, K, h, w) float32 raw (flip-averaged) outputs when asked for, else None.
        confusion: (K, K) int64 confusion matrix (rows ground truth, columns prediction).
    """

    metrics: dict[str, Any]
    labels_pred: np.ndarray = field(repr=False)
    logits: np.ndarray | None = field(default=None, repr=False)
    confusion: np.ndarray | None = field(default=None, repr=False)


def _run(infer: InferFn, batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Logits of one batch; with ``fixed_batch`` every call gets exactly that many images."""
    return run_batched(infer, batch, fixed_batch, 4, "logits (N, K, h, w)")


def _predict(infer: InferFn, images: np.ndarray, flip_test: bool,
             fixed_batch: int | None) -> np.ndarray:
    logits = _run(infer, images, fixed_batch)
    if flip_test:
        logits = flip_average(logits, _run(infer, np.ascontiguousarray(images[..., ::-1]), fixed_batch))
    return logits


def evaluate_segmentation(infer: InferFn, dataset, batch_size: int = 8, flip_test: bool = False,
                          max_images: int | None = None, keep_logits: bool = False,
                          progress: bool = False, fixed_batch: int | None = None) -> SegEvalResult:
    """Evaluate a logits callable on a :class:`~hrnet_edge.data.segmentation.SegDataset`.

    Images and labels use the dataset's evaluation transform (whole image resized to
    ``input_size``, never augmented). Logits are upsampled to the label size, argmaxed
    and accumulated into one confusion matrix.

    Args:
        infer: ``(N, 3, H, W) float32 RGB 0..1 -> (N, K, h, w)`` logits.
        dataset: anything with ``stack_images``, ``stack_labels``, ``num_classes``,
            ``class_names``, ``ignore_index`` and ``len()``.
        batch_size: images decoded and evaluated together.
        flip_test: average with the mirrored input's logits (mirrored back).
        max_images: evaluate only the first ``max_images`` images.
        keep_logits: keep the raw logits (memory: N*K*h*w floats).
        progress: show a tqdm bar.
        fixed_batch: the callable takes exactly this many images per call (1: one image
            at a time, e.g. artifacts exported with a static batch); a short last call is
            padded with copies and the padding's outputs dropped. None: whole batches.

    Returns:
        SegEvalResult with metrics, predicted labels and optionally logits.

    Raises:
        DataError: the dataset is empty.
        ValueError: bad batch sizes, or logits whose class count differs from the dataset.
    """
    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if n <= 0:
        raise DataError("the segmentation dataset has no image to evaluate")
    if batch_size < 1 or (fixed_batch is not None and fixed_batch < 1):
        raise ValueError(f"batch_size and fixed_batch must be >= 1, got {batch_size}, {fixed_batch}")
    k = dataset.num_classes
    conf = np.zeros((k, k), np.int64)
    preds, kept = [], []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        from hrnet_edge.console import bar_stream

        starts = tqdm(starts, desc="evaluate", unit="batch", file=bar_stream())
    for s in starts:
        idx = list(range(s, min(n, s + batch_size)))
        logits = _predict(infer, dataset.stack_images(idx), flip_test, fixed_batch)
        if logits.shape[1] != k:
            raise ValueError(f"infer returned {logits.shape[1]} classes, the dataset has {k}")
        labels = dataset.stack_labels(idx)
        pred = label_map(logits, labels.shape[1:])
        conf += confusion_matrix(pred, labels, k, dataset.ignore_index)
        preds.append(pred.astype(np.uint8))
        if keep_logits:
            kept.append(logits)
    metrics = seg_metrics(conf, dataset.class_names)
    metrics["num_images"] = n
    return SegEvalResult(metrics=metrics, labels_pred=np.concatenate(preds),
                         logits=np.concatenate(kept) if kept else None, confusion=conf)
