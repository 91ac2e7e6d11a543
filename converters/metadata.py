"""The metadata every artifact carries, in ``metadata.json`` and embedded in the model.

:func:`base_metadata` describes the model once (variant, task, input contract,
output meaning with a decoding recipe precise enough for an app in another
language); each target then calls :func:`finish_metadata` to add its format,
precision, tool versions and the artifact's real input/output layout, and
:func:`write_metadata` to write ``metadata.json`` beside the model file.

Everything here is plain JSON (lists, not tuples or arrays), so the embedded copy and
the file compare equal after a round trip.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.metadata as _md
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    from torch import nn

from hrnet_edge.errors import ExportError, HRNetEdgeError
from hrnet_edge.io import atomic_path, sha256_file, size_bytes, write_json

SCHEMA_VERSION = 1
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# The key under which targets embed the metadata (ONNX metadata_props, OpenVINO
# rt_info, TFLite model metadata).
EMBED_KEY = "hrnet_edge"

# Distribution names (as pip knows them) whose versions an artifact records.
TOOL_DISTRIBUTIONS = (
    "hrnet-edge", "torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf",
    "onnx2tf", "tensorflow", "tf-keras", "ai-edge-litert", "coremltools", "executorch",
    "torchao",
)


def tool_versions() -> dict[str, str]:
    """Versions of the installed tools, read from package metadata.

    Uses :mod:`importlib.metadata`, so no heavy backend is imported. Tools that are
    not installed are left out.
    """
    versions = {"python": platform.python_version()}
    for dist in TOOL_DISTRIBUTIONS:
        try:
            versions[dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            continue
    return versions


def to_jsonable(obj: Any) -> Any:
    """A deep copy of ``obj`` made of JSON types only (tuples -> lists, arrays -> lists)."""
    from hrnet_edge.io import jsonable

    return json.loads(json.dumps(obj, default=jsonable))


def output_shape(model: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """The model's output shape for ``input_shape``, computed on the meta device
    (no memory, milliseconds even for large inputs)."""
    import torch

    with torch.no_grad():
        try:
            meta = copy.deepcopy(model).to("meta").eval()
            return list(meta(torch.zeros(*input_shape, device="meta")).shape)
        except Exception:  # a module that cannot move to meta (e.g. custom extensions)
            was_training = model.training
            model.eval()
            try:
                return list(model(torch.zeros(*input_shape)).shape)
            finally:
                model.train(was_training)


def _input_spec(cfg) -> dict[str, Any]:
    h, w = cfg.input_size
    spec: dict[str, Any] = {
        "name": INPUT_NAME, "shape": [1, 3, h, w], "layout": "NCHW", "dtype": "float32",
        "color": "RGB",
    }
    if cfg.normalize_in_graph:
        spec["range"] = [0.0, 1.0]
        spec["normalization"] = {
            "in_graph": True, "mean": list(cfg.mean), "std": list(cfg.std),
            "recipe": "feed RGB pixels / 255; the graph computes (x - mean) / std itself",
        }
    else:
        spec["range"] = None
        spec["normalization"] = {
            "in_graph": False, "mean": list(cfg.mean), "std": list(cfg.std),
            "recipe": "feed (RGB / 255 - mean) / std per channel",
        }
    return spec


def _pose_semantics(cfg, task_info: dict[str, Any]) -> dict[str, Any]:
    # The conventions of hrnet_edge.data.heatmaps (decode_heatmaps, heatmap_to_input,
    # get_affine_transform), written out so an app can decode without Python.
    k = cfg.num_outputs
    decoding = {
        "coordinates": "pixel-index: the centre of pixel (row i, column j) is (x=j, y=i)",
        "steps": [
            "for each keypoint k: (py, px) = argmax of heatmap[k] (row-major, h x w); "
            "score = heatmap[k, py, px]",
            "sub-pixel refinement as the checks did (decoder below). 'dark': blur heatmap[k] "
            "with a normalised Gaussian of the target sigma (kernel radius round(3*sigma), "
            "edges replicated), rescale it to keep the original peak, take L = log(max(., "
            "1e-10)); with central differences at (px, py) gx = (L[x+1]-L[x-1])/2, gy likewise, "
            "hxx = L[x+1]-2L[x]+L[x-1], hyy likewise, hxy = (L[y+1,x+1]-L[y+1,x-1]-L[y-1,x+1]"
            "+L[y-1,x-1])/4; if det = hxx*hyy-hxy^2 > 0 and hxx < 0 and the peak is not on the "
            "border: (px, py) -= H^-1 (gx, gy), kept only when both offsets are within 1 pixel. "
            "'quarter': if 0 < px < w-1: px += 0.25 * sign(heatmap[k, py, px+1] - "
            "heatmap[k, py, px-1]), and likewise for py",
            "to input pixels: x_in = (px + 0.5) * sx - 0.5, y_in = (py + 0.5) * sy - 0.5 with "
            "sx = W / w, sy = H / h (the stride, 4)",
            "to the original image: [x, y] = A_inv @ [x_in, y_in, 1], the inverse of the crop "
            "affine A = [k*R | t], k = W / box_w, R = [[cos r, sin r], [-sin r, cos r]], "
            "t = ((W-1)/2, (H-1)/2) - k*R @ (box_cx, box_cy); the box (centre, w, h) has the "
            "input's aspect ratio, r is the crop rotation in degrees (0 at test time)",
        ],
        "flip_test": "mirror the heatmaps of the flipped input along w and swap the "
                     "flip_pairs; no pixel shift is needed with this alignment",
        "score_threshold": task_info.get("score_threshold", 0.2),
        "decoder": task_info.get("decoder", "dark"),
        "target_sigma": task_info.get("sigma", 2.0),
        "flip_test_in_checks": task_info.get("flip_test", True),
    }
    decoding.update(task_info.get("decoding", {}))
    out = {
        "kind": "keypoint_heatmaps",
        "stride": 4,
        "num_keypoints": k,
        "keypoint_names": task_info.get("keypoint_names", [f"kp{i}" for i in range(k)]),
        "skeleton": task_info.get("skeleton", []),
        "flip_pairs": task_info.get("flip_pairs", []),
        "decoding": decoding,
    }
    if "crop_padding" in task_info:  # the pose task gives it (the crop its data loader makes)
        out["person_crop"] = {
            "padding": task_info["crop_padding"],
            "steps": [
                "person box (x, y, w, h) in image pixels (a detector's, or the whole picture)",
                "grow its short side to the input's aspect W / H around the box centre, then "
                "both sides by padding: the crop box (centre c, size s)",
                "input pixel = A @ [x, y, 1] with A the crop affine of the decoding steps "
                "(k = W / s_w, no rotation); sample bilinearly, zero outside the image",
            ],
        }
    return out


def _seg_semantics(cfg, task_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "segmentation_logits",
        "stride": 4,
        "num_classes": cfg.num_outputs,
        "classes": task_info.get("classes", [f"class{i}" for i in range(cfg.num_outputs)]),
        "palette": task_info.get("palette", []),
        "ignore_index": task_info.get("ignore_index", 255),
        "decoding": {"steps": [
            "resize the image to the input size (bilinear), RGB in 0..1",
            "resize logits bilinearly (align_corners=False: sample at (i + 0.5) * scale - 0.5) "
            "to the input or image size",
            "label = argmax over the class axis; colour = palette[label]",
        ], "flip_test_in_checks": task_info.get("flip_test", False)},
    }


def _det_semantics(cfg, task_info: dict[str, Any]) -> dict[str, Any]:
    h, w = cfg.input_size[0] // 4, cfg.input_size[1] // 4
    strides = [4 * 2**i for i in range(cfg.det_levels)]
    # avg_pool2d(k, k) floors, so level i has floor(h / 2**i) x floor(w / 2**i) points.
    sizes = [[h // 2**i, w // 2**i] for i in range(cfg.det_levels)]
    out = {
        "kind": "anchor_free_points",
        "num_classes": cfg.num_outputs,
        "classes": task_info.get("classes", [f"class{i}" for i in range(cfg.num_outputs)]),
        "strides": strides,
        "level_sizes": sizes,
        "columns": ["l", "t", "r", "b", "centerness", "class logits..."],
        "decoding": task_info.get("decoder") or {
            "steps": [
                "points are ordered level by level (strides as listed), row-major in a level",
                "centre of point (row, col) at stride s: cx = (col + 0.5) * s, cy = (row + 0.5) * s",
                "box = (cx - exp(l) * s, cy - exp(t) * s, cx + exp(r) * s, cy + exp(b) * s)",
                "score = sigmoid(class logit) * sigmoid(centerness)",
                "keep score > score_threshold, then per-class NMS at nms_iou",
            ],
            "score_threshold": task_info.get("score_threshold", 0.05),
            "nms_iou": task_info.get("nms_iou", 0.6),
        },
    }
    if "category_ids" in task_info:  # class index -> the dataset's category id (COCO results)
        out["category_ids"] = task_info["category_ids"]
    return out


def _cls_semantics(cfg, task_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "class_logits",
        "num_classes": cfg.num_outputs,
        "classes": task_info.get("classes", [f"class{i}" for i in range(cfg.num_outputs)]),
        "preprocess": f"resize the short side to input / {task_info.get('resize_ratio', 0.875)}, "
                      "centre-crop to the input size, RGB in 0..1",
        "decoding": {"steps": ["probabilities = softmax(logits)", "top-k by probability"]},
    }


_SEMANTICS = {"pose": _pose_semantics, "seg": _seg_semantics, "det": _det_semantics,
              "cls": _cls_semantics}
_LAYOUTS = {"pose": "NCHW", "seg": "NCHW", "det": "NPD", "cls": "NC"}


def base_metadata(model: nn.Module, task_info: dict[str, Any] | None = None,
                  checkpoint_sha256: str | None = None) -> dict[str, Any]:
    """The target-independent metadata of ``model``.

    Args:
        model: an :class:`hrnet_edge.HRNet` (anything with a ``cfg`` ModelConfig).
        task_info: task facts that are not in the config: ``keypoint_names``,
            ``skeleton``, ``flip_pairs`` (pose), ``classes`` (seg, det, cls),
            ``score_threshold``, ``nms_iou``, ``ignore_index``. Anything else is kept
            under ``task_info``.
        checkpoint_sha256: hash of the checkpoint the weights came from, if any.

    Returns:
        A JSON-serialisable dict: variant, task, model_config, input, output.
    """
    cfg = model.cfg  # type: ignore[attr-defined]
    task_info = dict(task_info or {})
    inp = _input_spec(cfg)
    out = {
        "name": OUTPUT_NAME,
        "shape": output_shape(model, tuple(inp["shape"])),
        "layout": _LAYOUTS[cfg.task],
        "dtype": "float32",
        **_SEMANTICS[cfg.task](cfg, task_info),
    }
    return to_jsonable({
        "schema_version": SCHEMA_VERSION,
        "variant": cfg.name,
        "task": cfg.task,
        "model_config": cfg.to_dict(),
        "checkpoint_sha256": checkpoint_sha256,
        "input": inp,
        "output": out,
        "task_info": task_info,
    })


def finish_metadata(base: dict[str, Any], target: str, precision: str, *,
                    input: dict[str, Any] | None = None,  # noqa: A002 - mirrors the key
                    output: dict[str, Any] | None = None,
                    notes: Iterable[str] = (),
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add a target's fields to a copy of ``base``.

    Args:
        base: from :func:`base_metadata` (left unchanged).
        target: the target name, e.g. ``"tflite"``.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        input: overrides of the input description (real name, layout, shape, dtype,
            quantization) where the artifact differs from the PyTorch model.
        output: overrides of the output description, likewise.
        notes: free-text facts an app should know (e.g. a runtime hint).
        extra: further top-level fields (format, opset, quantization, runtime).

    Returns:
        A new JSON-serialisable dict.
    """
    meta = to_jsonable(base)
    meta["target"] = target
    meta["precision"] = precision
    meta["input"] = {**meta.get("input", {}), **to_jsonable(input or {})}
    meta["output"] = {**meta.get("output", {}), **to_jsonable(output or {})}
    meta.update(to_jsonable(extra or {}))
    meta["notes"] = [*meta.get("notes", []), *notes]
    meta["tool_versions"] = tool_versions()
    # No export time inside the artifact (it was embedded in every model file): the same
    # inputs give the same bytes; the pipeline keeps the time in exports/index.json.
    return meta


# Per-run facts (export seconds) live in this file beside an artifact, never in its
# metadata.json or model file, so one input always gives the same artifact bytes.
TIMINGS_FILE = "timings.json"


def embedded_json(meta: dict[str, Any]) -> str:
    """The compact JSON string targets embed inside the model file."""
    return json.dumps(meta, separators=(",", ":"), sort_keys=True)


def write_metadata(folder: Path, meta: dict[str, Any], model_file: Path,
                   companions: Iterable[Path] = ()) -> Path:
    """Write ``folder/metadata.json``: ``meta`` plus an ``artifact`` entry (file name,
    size, SHA-256 of the model file and of companion files such as OpenVINO's .bin),
    which the embedded copy cannot hold."""
    full = dict(meta)
    full["artifact"] = {
        "file": model_file.name,
        "size_bytes": size_bytes(model_file),
        "sha256": sha256_file(model_file),
        "companions": [
            {"file": p.name, "size_bytes": size_bytes(p), "sha256": sha256_file(p)}
            for p in companions
        ],
    }
    return write_json(Path(folder) / "metadata.json", full)


@contextlib.contextmanager
def staged_artifact(out_dir: Path, target: str, precision: str) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``out_dir`` only on success.

    Any exception inside the block removes the staging folder and leaves ``out_dir``
    as it was; errors that are not already typed become :class:`ExportError` naming
    the target and precision, so a failed export never leaves half an artifact.
    """
    try:
        with atomic_path(out_dir) as stage:
            stage.mkdir(parents=True)
            yield stage
    except HRNetEdgeError:
        raise
    except Exception as exc:
        raise ExportError(f"{target} {precision} export failed: {type(exc).__name__}: {exc}") from exc
