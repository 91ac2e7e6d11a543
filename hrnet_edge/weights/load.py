"""Load published HRNet weights a user has downloaded into an hrnet-edge model.

Files: ``.safetensors``, or a PyTorch pickle (``.pth``, ``.pt``, ``.bin``) read with
``torch.load(weights_only=True)`` only, so a file cannot run code. Sources: timm's (and
HRNet-Image-Classification's) classification checkpoints, the official pose and
segmentation releases, and hrnet-edge's own checkpoints; each has a key map
(:mod:`hrnet_edge.weights.keymap`). ``parts`` picks what is loaded: ``backbone``,
``head`` or both; the rest of the model keeps its initialisation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from hrnet_edge.errors import CheckpointError, ConfigError
from hrnet_edge.weights.keymap import SOURCES, KeyMap, get_map

PARTS = ("backbone", "head")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# A BN's batch counter is not a weight: a file without it (older PyTorch) still fits.
OPTIONAL_LEAVES = ("num_batches_tracked",)
SHOWN = 8  # keys named per kind in an error message


class WeightsError(CheckpointError):
    """A weights file cannot be read, or its source is not known."""


class WeightsMismatch(WeightsError):
    """A weights file does not fit the model: the keys and shapes that differ.

    Attributes:
        missing: hrnet-edge keys of the chosen parts the file does not give.
        unexpected: keys of the file that no rule maps onto this model.
        shapes: ``(hrnet-edge key, file shape, model shape)`` for each shape mismatch.
    """

    def __init__(self, path: Path, source: str, missing: list[str], unexpected: list[str],
                 shapes: list[tuple[str, tuple, tuple]]):
        self.missing, self.unexpected, self.shapes = missing, unexpected, shapes
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing {_shown(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected {_shown(unexpected)}")
        if shapes:
            shown = ", ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in shapes[:SHOWN])
            parts.append(f"{len(shapes)} with another shape [{shown}{' ...' if len(shapes) > SHOWN else ''}]")
        super().__init__(f"weights {path} ({source} layout) do not fit this model: " + "; ".join(parts)
                         + " (another width or head? parts = [\"backbone\"] loads the backbone alone)")


def _shown(keys: list[str]) -> str:
    return "[" + ", ".join(keys[:SHOWN]) + (" ..." if len(keys) > SHOWN else "") + "]"


@dataclass
class LoadReport:
    """What :func:`load_weights` did."""

    path: str
    source: str
    sha256: str
    parts: tuple[str, ...]
    loaded: int  # tensors copied into the model
    skipped: list[str] = field(default_factory=list)  # file keys of parts not loaded / not built
    notes: list[str] = field(default_factory=list)  # config differences worth knowing

    def summary(self) -> str:
        text = (f"{self.loaded} tensors of the {', '.join(self.parts)} from {self.path} "
                f"({self.source} layout, sha256 {self.sha256[:12]})")
        if self.skipped:
            text += f"; {len(self.skipped)} tensors of other parts left out"
        return text


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (``.safetensors`` or a ``weights_only`` pickle),
    unwrapped from a ``state_dict`` or ``model`` entry when the file nests them.

    Raises:
        WeightsError: missing file, unreadable file, or entries that are not tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"weights file {path} is not a valid safetensors file: {exc}") from exc
    if path.suffix not in PICKLE_SUFFIXES:
        raise WeightsError(f"weights file {path}: unknown suffix {path.suffix!r}; "
                           f"valid: .safetensors, {', '.join(PICKLE_SUFFIXES)}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError...: all one message
        raise WeightsError(f"weights file {path} cannot be read with torch.load(weights_only=True) "
                           f"(only tensors and plain containers are allowed): {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return _tensors(obj, path)


def _tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"weights file {path} holds no state dict (a mapping of names to tensors)")
    bad = sorted(str(k) for k, v in obj.items() if not torch.is_tensor(v))
    if bad:
        raise WeightsError(f"weights file {path}: {len(bad)} entries are not tensors {_shown(bad)}")
    return dict(obj)


def detect_source(state: dict[str, torch.Tensor], path: Path | str = "") -> str:
    """The source whose ``detect`` keys the state dict holds (its prefix stripped)."""
    for name in SOURCES:
        kmap = get_map(name)
        if kmap.detects(kmap.prepare(state).keys()):
            return name
    raise WeightsError(f"weights {path}: the layout is none of {', '.join(SOURCES)} "
                       f"(first keys: {_shown(sorted(state))}); set the source explicitly")


def part_of(key: str) -> str:
    return key.split(".", 1)[0]


def map_state(state: dict[str, torch.Tensor], kmap: KeyMap) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(hrnet-edge name -> tensor, source keys no rule takes)."""
    mapped: dict[str, torch.Tensor] = {}
    unmatched = []
    for key, value in kmap.prepare(state).items():
        target = kmap.target_of(key)
        if target is None:
            unmatched.append(key)
        else:
            mapped[target] = value
    return mapped, unmatched


def load_weights(model: nn.Module, path: str | Path, parts: Iterable[str] = PARTS, source: str = "auto",
                 sha256: str | None = None) -> LoadReport:
    """Copy the ``parts`` of the weights in ``path`` into ``model`` (all or nothing).

    Args:
        model: an :class:`~hrnet_edge.models.hrnet.HRNet`.
        path: the weights file.
        parts: ``backbone`` and/or ``head``.
        source: a key map name (``timm``, ``pose``, ``seg``, ``hrnet-edge``) or ``auto``.
        sha256: when given, the file must have this hash (the one the run recorded).

    Raises:
        WeightsMismatch: missing, unexpected or differently shaped keys (nothing is loaded).
        WeightsError: the file cannot be read, its layout is unknown, or its hash changed.
        ConfigError: an unknown part or source.
    """
    from hrnet_edge.io import sha256_file

    parts = tuple(parts)
    bad = [p for p in parts if p not in PARTS] or ([] if parts else ["(none)"])
    if bad:
        raise ConfigError(f"unknown weights part(s) {bad}; valid: {', '.join(PARTS)}")
    path = Path(path)
    digest = sha256_file(path) if path.is_file() else ""
    if sha256 is not None and digest != sha256:
        raise WeightsError(f"weights file {path} changed since the run recorded it "
                           f"(sha256 {digest[:12] or 'missing'} vs recorded {sha256[:12]})")
    state = read_state_dict(path)
    name = detect_source(state, path) if source == "auto" else source
    kmap = get_map(name)
    mapped, unexpected = map_state(state, kmap)
    target = model.state_dict()
    other_parts = {k for k in mapped if part_of(k) not in parts}  # left out, whatever the model has
    unbuilt = {k for k in mapped if k not in target and _unbuilt_fuse_row(k, target)}
    unexpected += sorted(k for k in mapped if k not in target and k not in unbuilt | other_parts)
    chosen = {k: v for k, v in mapped.items() if k in target and k not in other_parts}
    skipped = sorted(other_parts | unbuilt)
    missing = sorted(k for k in target if part_of(k) in parts and k not in chosen
                     and k.rpartition(".")[2] not in OPTIONAL_LEAVES)
    shapes = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in sorted(chosen.items())
              if tuple(v.shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        raise WeightsMismatch(path, name, missing, sorted(unexpected), shapes)
    merged = dict(target)
    merged.update({k: v.to(target[k].dtype) for k, v in chosen.items()})
    model.load_state_dict(merged)
    return LoadReport(str(path), name, digest, parts, len(chosen), skipped, _notes(model, kmap, parts))


_FUSE_ROW = re.compile(r"(backbone\.stages\.\d+\.\d+\.fuse\.)(\d+)\.")


def _unbuilt_fuse_row(key: str, target: dict) -> bool:
    """True for a key of a fuse row that the model does not build while it builds row 0
    of the same module: the V1 pose backbone fuses its last module into the
    high-resolution branch only, so an ImageNet checkpoint's other rows have no place."""
    m = _FUSE_ROW.match(key)
    if not m or m.group(2) == "0":
        return False
    row0, this_row = f"{m.group(1)}0.", f"{m.group(1)}{m.group(2)}."
    return any(k.startswith(row0) for k in target) and not any(k.startswith(this_row) for k in target)


def _notes(model: nn.Module, kmap: KeyMap, parts: tuple[str, ...]) -> list[str]:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return []
    notes = []
    for key, want in kmap.expects.items():
        have = getattr(cfg, key, getattr(cfg.backbone, key, None))
        if key in ("pose_head", "head_upsample_mode") and "head" not in parts:
            continue
        if have != want:
            notes.append(f"the {kmap.name} checkpoints were trained with {key} = {want!r}; this model has "
                         f"{have!r}, so its outputs differ from the original model's until fine-tuned")
    return notes
