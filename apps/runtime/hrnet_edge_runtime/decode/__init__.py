"""One numpy decoder per task (pose, seg, det, cls), shared by the host checks and the
device runner.

:func:`decoder_for` reads everything a decoder needs from an artifact's
``metadata.json`` (decoding method and parameters, input size, pyramid levels, classes)
and returns an object whose ``decode(raw, context)`` turns the artifact's raw output
into a dict of results:

* pose (:class:`~hrnet_edge_runtime.decode.pose.PoseDecoder`): ``keypoints`` (N, K, 3)
  x, y, score in the original image, given the crop boxes (``center``, ``scale``; from a
  person box with :func:`~hrnet_edge_runtime.decode.pose.box_to_crop`);
* det (:class:`~hrnet_edge_runtime.decode.det.DetDecoder`): ``boxes``, ``scores``,
  ``classes``, ``labels``, ``category_ids`` in the original image, given the letterbox
  (``scale``, ``orig_hw``; :func:`~hrnet_edge_runtime.decode.det.letterbox_context`);
* seg (:class:`~hrnet_edge_runtime.decode.seg.SegDecoder`): ``labels`` (N, H, W) at the
  requested ``size``;
* cls (:class:`~hrnet_edge_runtime.decode.cls.ClsDecoder`): top-``k`` ``indices``,
  ``probabilities`` and ``labels``.

The same functions (``decode_heatmaps``, ``decode``/``nms``, ``upsample_logits``,
``topk``) are what the project's own evaluation calls, so there is one source of truth.
Nothing here imports anything but numpy.
"""
from __future__ import annotations

from typing import Any, Protocol

from hrnet_edge_runtime.decode.cls import ClsDecoder
from hrnet_edge_runtime.decode.det import DetDecoder, letterbox_context
from hrnet_edge_runtime.decode.errors import (DecodeConfigError, DecodeError, DecodeInputError,
                                              MetadataError)
from hrnet_edge_runtime.decode.pose import PoseDecoder, box_to_crop
from hrnet_edge_runtime.decode.seg import SegDecoder

DECODER_CLASSES = {"pose": PoseDecoder, "det": DetDecoder, "seg": SegDecoder, "cls": ClsDecoder}


class Decoder(Protocol):
    """What :func:`decoder_for` returns."""

    task: str

    def decode(self, raw: Any, context: dict | None = None) -> dict:
        """Results of one raw output (see the task's decoder class)."""


def decoder_for(metadata: dict) -> Decoder:
    """The decoder of an artifact, configured from its ``metadata.json`` (as a dict).

    Raises:
        MetadataError: ``task`` is missing or unknown, or a key the task's decoder
            needs is missing or invalid (the error's ``key`` names it).
    """
    if not isinstance(metadata, dict):
        raise MetadataError("(root)", f"must be a JSON object, got {type(metadata).__name__}")
    if "task" not in metadata:
        raise MetadataError("task", f"is missing; valid: {', '.join(DECODER_CLASSES)}")
    task = metadata["task"]
    if not isinstance(task, str) or task not in DECODER_CLASSES:
        raise MetadataError("task", f"{task!r} has no decoder; valid: {', '.join(DECODER_CLASSES)}")
    return DECODER_CLASSES[task](metadata)


__all__ = ["ClsDecoder", "DECODER_CLASSES", "DecodeConfigError", "DecodeError", "DecodeInputError",
           "Decoder", "DetDecoder", "MetadataError", "PoseDecoder", "SegDecoder", "box_to_crop", "decoder_for",
           "letterbox_context"]
