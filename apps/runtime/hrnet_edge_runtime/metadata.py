"""Read an artifact folder (``model.<ext>`` + ``metadata.json``) as the project writes it.

Every export folder holds the model (OpenVINO: ``model.xml`` plus its ``model.bin``;
Core ML: the ``model.mlpackage`` folder) and ``metadata.json`` with, among others::

    schema_version, variant, task, target, precision, format,
    input  {name, shape, layout, dtype, color, range, normalization, [quantization]},
    output {name, shape, layout, dtype, kind, ... decoding},
    artifact {file, size_bytes, sha256, companions: [{file, size_bytes, sha256}]}

:func:`load_artifact` checks those fields and says what the app feeds
(:class:`InputSpec`); :func:`verify_sha256` hashes the files as the project does (a
folder: every file sorted by relative path, each path's bytes then its contents).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrnet_edge_runtime.errors import ArtifactError

SCHEMA_VERSIONS = (1,)
METADATA_FILE = "metadata.json"
TARGETS = ("onnx", "openvino", "tflite", "executorch", "coreml")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8u8")
# the model file's suffix per target (Core ML: a package folder, or a single .mlmodel)
SUFFIXES = {"onnx": (".onnx",), "openvino": (".xml",), "tflite": (".tflite",),
            "executorch": (".pte",), "coreml": (".mlpackage", ".mlmodel")}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class InputSpec:
    """What an app feeds the artifact, from its metadata.

    Attributes:
        name: the input's name in the model.
        shape: the array to feed, e.g. ``(1, 3, 128, 96)`` or ``(1, 128, 96, 3)``.
        dtype: ``"float32"`` (RGB in 0..1) or ``"uint8"`` (RGB bytes 0..255).
        layout: ``"NCHW"`` or ``"NHWC"``.
        height, width: the model's input size in pixels.
        normalize_in_graph: True when the graph computes ``(x - mean) / std`` itself.
        mean, std: the per-channel normalization (applied by the app only when
            ``normalize_in_graph`` is False).
        image: True for a Core ML ``ImageType`` input (fed as an RGB picture).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str
    height: int
    width: int
    normalize_in_graph: bool = True
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    image: bool = False

    def as_dict(self) -> dict[str, Any]:
        """name, shape, dtype, layout: JSON types."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}


@dataclass(frozen=True)
class ArtifactFile:
    """One file (or package folder) of an artifact and what ``metadata.json`` says of it."""

    name: str
    path: Path
    sha256: str
    size_bytes: int | None


@dataclass(frozen=True)
class Artifact:
    """An artifact folder whose ``metadata.json`` passed :func:`load_artifact`'s checks.

    Attributes:
        dir: the folder.
        meta: the whole ``metadata.json``.
        files: the model file first, then its companions (OpenVINO's ``.bin``).
    """

    dir: Path
    meta: dict[str, Any]
    schema_version: int
    target: str
    precision: str
    task: str
    input: InputSpec
    output: dict[str, Any]
    files: tuple[ArtifactFile, ...]

    @property
    def model_path(self) -> Path:
        """The file (or package) a runtime opens: ``model.onnx``, ``model.xml``, ..."""
        return self.files[0].path

    @property
    def sha256(self) -> str:
        """The artifact's hash as the project's host check rows write it: the model
        file's sha256, followed by each companion's (OpenVINO: 128 hex digits)."""
        return "".join(f.sha256 for f in self.files)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the model file(s), as listed."""
        return sum(_size(f.path) for f in self.files)

    @property
    def variant(self) -> str | None:
        return self.meta.get("variant")


def read_json_file(path: Path) -> Any:
    """The parsed JSON of ``path``; ArtifactError naming the file when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc})") from exc


def load_artifact(folder: str | Path) -> Artifact:
    """Read and check ``folder/metadata.json``.

    Raises:
        ArtifactError: the folder or its metadata is missing, not JSON, of an unknown
            schema version, or lacks a field this runtime needs (named in the message),
            or a listed model file is absent.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such artifact folder")
    path = folder / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder}: not an artifact folder (no {METADATA_FILE})")
    meta = read_json_file(path)
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise ArtifactError(f"{path}: unknown schema_version {version!r}; this runtime reads "
                            f"{', '.join(map(str, SCHEMA_VERSIONS))} (upgrade hrnet-edge-runtime)")
    target = _choice(meta, "target", TARGETS, path)
    precision = _choice(meta, "precision", PRECISIONS, path)
    task = meta.get("task")
    if not isinstance(task, str) or not task:
        raise ArtifactError(f"{path}: field 'task' must be a non-empty string, got {task!r}")
    inp = _input_spec(_section(meta, "input", path), path)
    out = _section(meta, "output", path)
    _typed(out, "output", path, name=str, shape=list, layout=str, dtype=str)
    files = _files(meta, folder, path)
    if files[0].path.suffix not in SUFFIXES[target]:
        raise ArtifactError(f"{path}: target {target!r} expects a {'/'.join(SUFFIXES[target])} model, "
                            f"metadata lists {files[0].name!r}")
    return Artifact(folder, meta, version, target, precision, task, inp, out, files)


def verify_sha256(artifact: Artifact) -> dict[str, str]:
    """Hash every model file and compare with ``metadata.json``.

    Returns:
        {file name: sha256} of the files checked.

    Raises:
        ArtifactError: naming the file, the expected and the actual hash.
    """
    got = {}
    for f in artifact.files:
        actual = sha256_path(f.path)
        if actual != f.sha256:
            raise ArtifactError(f"{f.path}: sha256 mismatch: metadata.json expects {f.sha256}, "
                                f"the file hashes to {actual} (corrupt or replaced artifact)")
        got[f.name] = actual
    return got


def sha256_path(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, or of a folder as the project hashes one (a Core ML
    package): every file sorted by relative path, each one's POSIX relative path then
    its bytes."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).parts)
    else:
        files = [path]
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _choice(meta: dict, key: str, choices: tuple[str, ...], path: Path) -> str:
    value = meta.get(key)
    if value not in choices:
        raise ArtifactError(f"{path}: field {key!r} is {value!r}; this runtime knows {', '.join(choices)}")
    return value


def _section(meta: dict, key: str, path: Path) -> dict[str, Any]:
    value = meta.get(key)
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: field {key!r} must be an object, got {type(value).__name__}")
    return value


def _typed(section: dict, where: str, path: Path, **types) -> None:
    for key, typ in types.items():
        if not isinstance(section.get(key), typ):
            raise ArtifactError(f"{path}: field '{where}.{key}' must be a {typ.__name__}, "
                                f"got {section.get(key)!r}")


def _input_spec(inp: dict[str, Any], path: Path) -> InputSpec:
    _typed(inp, "input", path, name=str, shape=list, layout=str, dtype=str)
    shape = inp["shape"]
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ArtifactError(f"{path}: field 'input.shape' must be 4 positive ints, got {shape!r}")
    dtype, layout = inp["dtype"], inp["layout"]
    if dtype == "int8":
        # A quantized input tensor (TFLite's int8-I/O variant): the app feeds float RGB in
        # 0..1 and the adapter quantizes it with the tensor's own scale and zero point.
        q = inp.get("quantization")
        scale = q.get("scale") if isinstance(q, dict) else None
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0
                and isinstance(q.get("zero_point"), int)):
            raise ArtifactError(f"{path}: an int8 input needs 'input.quantization' with a scale > 0 and an "
                                f"integer zero_point, got {q!r}")
        dtype = "float32"
    if dtype not in ("float32", "uint8"):
        raise ArtifactError(f"{path}: field 'input.dtype' is {dtype!r}; this runtime feeds float32, uint8 "
                            "or int8 with its quantization")
    image = layout.startswith("image")  # Core ML ImageType: shape written NCHW, fed as HWC pixels
    if image:
        h, w = int(inp.get("height", shape[2])), int(inp.get("width", shape[3]))
        shape, layout = [shape[0], h, w, 3], "NHWC"
    elif layout == "NCHW" and shape[1] == 3:
        h, w = shape[2], shape[3]
    elif layout == "NHWC" and shape[3] == 3:
        h, w = shape[1], shape[2]
    else:
        raise ArtifactError(f"{path}: input layout {inp['layout']!r} with shape {inp['shape']} is not an "
                            "RGB image (NCHW x 3 x H x W or NHWC H x W x 3)")
    norm = inp.get("normalization") or {}
    in_graph = bool(norm.get("in_graph", True))
    mean = tuple(float(v) for v in norm.get("mean", (0.0, 0.0, 0.0)))
    std = tuple(float(v) for v in norm.get("std", (1.0, 1.0, 1.0)))
    if not in_graph and dtype == "uint8":
        raise ArtifactError(f"{path}: a uint8 input must normalize in its graph (input.normalization.in_graph)")
    return InputSpec(inp["name"], tuple(shape), dtype, layout, h, w, in_graph, mean, std, image)


def _files(meta: dict, folder: Path, path: Path) -> tuple[ArtifactFile, ...]:
    art = _section(meta, "artifact", path)
    entries = [("artifact", art)] + [(f"artifact.companions[{i}]", c)
                                     for i, c in enumerate(art.get("companions") or [])]
    files = []
    for where, entry in entries:
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: field {where!r} must be an object")
        name, sha = entry.get("file"), entry.get("sha256")
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise ArtifactError(f"{path}: field '{where}.file' must be a file name in the folder, got {name!r}")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise ArtifactError(f"{path}: field '{where}.sha256' must be 64 hex digits, got {sha!r}")
        file = folder / name
        if not file.exists():
            raise ArtifactError(f"{file}: listed in {METADATA_FILE} but missing")
        size = entry.get("size_bytes")
        files.append(ArtifactFile(name, file, sha, size if isinstance(size, int) else None))
    return tuple(files)
