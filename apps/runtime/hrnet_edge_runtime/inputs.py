"""Turn pictures into the array an artifact takes, as its metadata says.

Two input forms exist (``metadata.json`` ``input``):

* float32 RGB in 0..1, NCHW (ONNX, OpenVINO, ExecuTorch) or NHWC (TFLite), the
  normalization ``(x - mean) / std`` inside the graph;
* uint8 RGB bytes 0..255, NHWC (``int8u8`` artifacts, Core ML image inputs), the
  division by 255 and the normalization inside the graph.

:func:`image_to_input` resizes a whole picture to the model's input size (a plain
resize: the task-specific crops of pose boxes or letterboxing belong to the decoders).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hrnet_edge_runtime.errors import ArtifactError, UsageError
from hrnet_edge_runtime.metadata import Artifact, InputSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _spec(artifact: Artifact | InputSpec) -> InputSpec:
    return artifact if isinstance(artifact, InputSpec) else artifact.input


def pixels_to_input(rgb: np.ndarray, artifact: Artifact | InputSpec) -> np.ndarray:
    """RGB bytes already at the model's size (H x W x 3, or N x H x W x 3) as the array
    the artifact takes (batch axis added when missing).

    Raises:
        UsageError: not uint8 RGB of the model's input size.
    """
    spec = _spec(artifact)
    rgb = np.asarray(rgb)
    if rgb.ndim == 3:
        rgb = rgb[None]
    if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[1:] != (spec.height, spec.width, 3):
        raise UsageError(f"expected uint8 RGB pixels of {spec.height} x {spec.width} x 3, "
                         f"got {rgb.dtype} {tuple(rgb.shape)}")
    if spec.dtype == "uint8":
        x = rgb
    else:
        x = rgb.astype(np.float32) / np.float32(255.0)
        if not spec.normalize_in_graph:  # the app normalizes (no artifact of the project does)
            x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize H x W x 3 uint8 RGB to ``height`` x ``width`` (Pillow bilinear, which
    filters when shrinking)."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise UsageError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {tuple(rgb.shape)}")
    if rgb.shape[:2] == (height, width):
        return rgb
    resample = getattr(Image, "Resampling", Image).BILINEAR
    return np.asarray(Image.fromarray(rgb, "RGB").resize((width, height), resample))


def image_to_input(rgb_uint8_hwc: np.ndarray, artifact: Artifact | InputSpec) -> np.ndarray:
    """A whole H x W x 3 uint8 RGB picture, resized to the model's input size, as the
    array the artifact takes (batch of one)."""
    spec = _spec(artifact)
    return pixels_to_input(resize_rgb(rgb_uint8_hwc, spec.height, spec.width), spec)


def random_input(artifact: Artifact | InputSpec, seed: int = 0) -> np.ndarray:
    """Seeded random pixels of the model's size, as the array the artifact takes."""
    spec = _spec(artifact)
    rng = np.random.default_rng(seed)
    return pixels_to_input(rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8), spec)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB (EXIF orientation applied).

    Raises:
        ArtifactError: the file is missing or not an image Pillow can decode.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable image ({exc})") from exc


def list_images(folder: str | Path) -> list[Path]:
    """The .jpg/.jpeg/.png files of ``folder`` (not recursive), sorted.

    Raises:
        UsageError: the folder is missing or holds no such image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--images {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--images {folder}: no {'/'.join(IMAGE_SUFFIXES)} files in it")
    return files
