"""Pose evaluation of any heatmap-producing callable: OKS AP (COCOeval) and PCK.

The model under test is a plain callable ``np.ndarray (N, 3, H, W) float32 RGB 0..1 ->
np.ndarray (N, K, h, w)`` heatmaps, so the PyTorch model and every exported artifact
(ONNX Runtime, OpenVINO, TFLite, Core ML, ExecuTorch) are evaluated by the same code.
Nothing here imports torch; decoding is the device runtime's
(:mod:`hrnet_edge_runtime.decode.pose`), so the checks and a device decode alike.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hrnet_edge_runtime.decode.pose import (decode_heatmaps, flip_average, heatmap_to_image,
                                            person_scores)

from hrnet_edge.data.keypoints import PERSON_CATEGORY_ID
from hrnet_edge.evaluation.batching import run_batched
from hrnet_edge.errors import DataError

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# HRNet's rescoring: a person's score is the mean peak over joints above this value.
KEYPOINT_SCORE_THRESHOLD = 0.2

InferFn = Callable[[np.ndarray], Any]


@dataclass
class PoseEvalResult:
    """Outcome of :func:`evaluate_pose`.

    Attributes:
        metrics: AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl (COCO OKS),
            ``PCK@0.05``, ``PCK@0.1`` and ``num_instances``.
        keypoints: (N, K, 3) image coordinates x, y and the heatmap peak as score.
        scores: (N,) person scores as submitted to COCOeval.
        image_ids: (N,) image id of each instance.
        heatmaps: (N, K, h, w) raw outputs when asked for, else None.
    """

    metrics: dict[str, float]
    keypoints: np.ndarray
    scores: np.ndarray
    image_ids: np.ndarray
    heatmaps: np.ndarray | None = field(default=None, repr=False)


def _run(infer: InferFn, batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Heatmaps of one batch, padded to ``fixed_batch`` when the artifact needs it."""
    return run_batched(infer, batch, fixed_batch, 4, "heatmaps (N, K, h, w)")


def _predict_batch(infer: InferFn, batch: np.ndarray, flip_perm: np.ndarray | None,
                   fixed_batch: int | None) -> np.ndarray:
    hm = _run(infer, batch, fixed_batch)
    if flip_perm is not None:
        # The heatmap grid is pixel-centre aligned with the input, so mirroring the
        # flipped output lines up exactly, with no one-pixel shift.
        hm = flip_average(hm, _run(infer, batch[:, :, :, ::-1], fixed_batch), flip_perm)
    return hm


def _batches(n: int, batch_size: int, progress: bool):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        from hrnet_edge.console import bar_stream

        starts = tqdm(starts, desc="evaluate", unit="batch", file=bar_stream())
    return starts


def predict_heatmaps(infer: InferFn, images: np.ndarray, batch_size: int = 32,
                     flip_perm: np.ndarray | None = None, pad_last: bool = False,
                     progress: bool = False) -> np.ndarray:
    """Heatmaps for NCHW images, batched; with ``flip_perm`` also flip-tested and averaged.

    Args:
        infer: the model callable.
        images: (N, 3, H, W) float32 RGB in 0..1.
        batch_size: images per call; the last batch may be smaller.
        flip_perm: left/right permutation of the joints; enables flip testing.
        pad_last: pad the last batch to ``batch_size`` (artifacts with a fixed batch).
        progress: show a tqdm bar.
    """
    fixed = batch_size if pad_last else None
    chunks = [_predict_batch(infer, images[s:s + batch_size], flip_perm, fixed)
              for s in _batches(images.shape[0], batch_size, progress)]
    return np.concatenate(chunks, axis=0)


def to_coco_results(keypoints: np.ndarray, image_ids: Sequence[int],
                    scores: Sequence[float]) -> list[dict]:
    """COCO keypoint results (the list ``COCO.loadRes`` takes) from (N, K, 3) arrays."""
    return [{"image_id": int(i), "category_id": PERSON_CATEGORY_ID,
             "keypoints": [round(float(v), 3) for v in kp.reshape(-1)], "score": float(s)}
            for kp, i, s in zip(keypoints, image_ids, scores)]


def _as_coco(coco_or_file):
    if isinstance(coco_or_file, (str, os.PathLike)):
        from pycocotools.coco import COCO

        from hrnet_edge.data.coco_keypoints import load_coco_json

        coco = COCO()
        coco.dataset = load_coco_json(coco_or_file)  # DataError on a malformed file
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco
    return coco_or_file


def oks_ap(predictions: list[dict], coco_or_file, image_ids: Sequence[int] | None = None,
           sigmas: np.ndarray | None = None) -> dict[str, float]:
    """OKS AP/AR of COCO-format keypoint predictions with pycocotools' COCOeval.

    Args:
        predictions: list of ``{"image_id", "category_id", "keypoints", "score"}``.
        coco_or_file: a ``pycocotools.coco.COCO`` object or a path to the annotation file.
        image_ids: evaluate on these images only (default: the images predicted on).
        sigmas: per-keypoint OKS sigmas (default: COCO's).

    Returns:
        dict with AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl (0..1; -1 where
        COCOeval has no ground truth in that area range).
    """
    from pycocotools.cocoeval import COCOeval

    if not predictions:
        return {k: 0.0 for k in STAT_NAMES}
    coco = _as_coco(coco_or_file)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        dets = coco.loadRes(list(predictions))
        ev = COCOeval(coco, dets, "keypoints")
        ev.params.imgIds = sorted({int(p["image_id"]) for p in predictions} if image_ids is None
                                  else {int(i) for i in image_ids})
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}


def pck(pred: np.ndarray, gt: np.ndarray, visibility: np.ndarray, bbox_sizes: np.ndarray,
        alpha: float) -> float:
    """Fraction of labelled keypoints (v > 0) within ``alpha * bbox_size`` of the truth.

    Args:
        pred, gt: (N, K, 2) coordinates in image pixels.
        visibility: (N, K) COCO visibility.
        bbox_sizes: (N,) per-instance reference size, max(bbox w, h).
        alpha: threshold as a fraction of the reference size.

    Returns:
        The fraction in 0..1, or NaN when no keypoint is labelled.
    """
    diff = np.asarray(pred, np.float64)[..., :2] - np.asarray(gt, np.float64)[..., :2]
    dist = np.linalg.norm(diff, axis=-1)
    mask = np.asarray(visibility) > 0
    if not mask.any():
        return float("nan")
    thr = alpha * np.asarray(bbox_sizes, np.float64)[:, None]
    return float((dist <= thr)[mask].mean())


def keypoint_agreement(kps_a: np.ndarray, kps_b: np.ndarray, bbox_sizes: np.ndarray,
                       alpha: float = 0.05, mask: np.ndarray | None = None) -> float:
    """Fraction of keypoints two decoders put within ``alpha * bbox_size`` of each other.

    A parity check of decoded outputs: an exported model agrees with the PyTorch model
    when almost all its keypoints land where the reference's do.

    Args:
        kps_a, kps_b: (N, K, 2+) keypoints in image pixels (extra columns ignored).
        bbox_sizes: (N,) per-instance reference size, max(bbox w, h).
        alpha: tolerance as a fraction of the reference size.
        mask: optional (N, K) booleans selecting the keypoints that count.
    """
    a, b = np.asarray(kps_a), np.asarray(kps_b)
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"keypoint arrays differ in shape: {a.shape} vs {b.shape}")
    m = np.ones(a.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if not m.any():
        return float("nan")
    return pck(a, b, m, bbox_sizes, alpha)


def _infer_instances(infer, dataset, idx, arrays, batch_size, flip_test, pad_last, progress,
                     keep_heatmaps, decoder):
    """Image coordinates (N, K, 2), peaks (N, K, 1) and optionally heatmaps of instances."""
    # Crop, infer and decode chunk by chunk: COCO val holds 6k people, whose crops and
    # heatmaps together would not fit in memory at once. Decoding works on whole chunks
    # even when the artifact takes one image per call.
    flip_perm = dataset.flip_perm if flip_test else None
    fixed = batch_size if pad_last else None
    chunk = max(batch_size, 64)
    xy, maxvals, kept = [], [], []
    for s in _batches(len(idx), chunk, progress):
        sel = idx[s:s + chunk]
        images = dataset.stack_images(sel)
        hm = np.concatenate([_predict_batch(infer, images[b:b + batch_size], flip_perm, fixed)
                             for b in range(0, len(sel), batch_size)])
        coords, peak = decode_heatmaps(hm, decoder, getattr(dataset, "sigma", 2.0))
        xy.append(heatmap_to_image(coords, arrays["center"][sel], arrays["scale"][sel],
                                   dataset.input_size, hm.shape[2:]))
        maxvals.append(peak)
        if keep_heatmaps:
            kept.append(hm)
    return np.concatenate(xy), np.concatenate(maxvals), np.concatenate(kept) if kept else None


def evaluate_pose(infer: InferFn, dataset, batch_size: int = 32, flip_test: bool = False,
                  progress: bool = False, keep_heatmaps: bool = False, pad_last: bool = False,
                  max_images: int | None = None, decoder: str = "dark") -> PoseEvalResult:
    """Evaluate a heatmap callable on a :class:`~hrnet_edge.data.CocoKeypoints` dataset.

    Crops every annotated person from its ground-truth box (no augmentation), runs
    ``infer``, decodes heatmaps (:func:`~hrnet_edge.data.heatmaps.decode_heatmaps` with
    ``decoder``, at the dataset's target sigma), maps them back to image coordinates and
    scores them with COCOeval's OKS and with PCK.

    Args:
        infer: ``(N, 3, H, W) float32 RGB 0..1 -> (N, K, h, w)`` heatmaps (NumPy or
            anything ``np.asarray`` accepts).
        dataset: the dataset; its ``train`` flag is ignored (crops are never augmented).
        batch_size: images per call (1 for artifacts with a fixed batch of one).
        flip_test: average with the mirrored input's heatmaps.
        progress: show a tqdm bar.
        keep_heatmaps: store the raw heatmaps in the result.
        pad_last: pad the last batch to ``batch_size`` (artifacts with a fixed batch).
        max_images: evaluate only the instances of the first ``max_images`` images.
        decoder: ``"dark"`` (distribution-aware, default) or ``"quarter"`` (HRNet's
            quarter-pixel shift).

    Returns:
        PoseEvalResult with the metrics and the decoded keypoints.
    """
    arrays = dataset.instance_arrays()
    idx = np.arange(len(dataset))
    if max_images is not None:
        keep_ids = sorted(set(arrays["image_id"].tolist()))[:max_images]
        idx = idx[np.isin(arrays["image_id"], keep_ids)]
    if len(idx) == 0:
        raise DataError(f"{dataset.ann_file} has no person instance to evaluate")
    xy, maxvals, heatmaps = _infer_instances(infer, dataset, idx, arrays, batch_size,
                                             flip_test, pad_last, progress, keep_heatmaps, decoder)
    kps = np.concatenate([xy, maxvals], axis=-1).astype(np.float32)
    scores = person_scores(maxvals, KEYPOINT_SCORE_THRESHOLD)
    image_ids = arrays["image_id"][idx]
    metrics = oks_ap(to_coco_results(kps, image_ids, scores), dataset.coco, image_ids=image_ids,
                     sigmas=dataset.sigmas)
    sizes = arrays["bbox"][idx][:, 2:].max(axis=1)
    for alpha in (0.05, 0.1):
        metrics[f"PCK@{alpha}"] = pck(xy, arrays["joints"][idx], arrays["vis"][idx], sizes, alpha)
    metrics["num_instances"] = float(len(idx))
    return PoseEvalResult(metrics=metrics, keypoints=kps, scores=scores.astype(np.float32),
                          image_ids=image_ids, heatmaps=heatmaps)
