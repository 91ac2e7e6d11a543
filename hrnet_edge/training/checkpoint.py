"""Checkpoints as safetensors + a small JSON of training state. No pickle anywhere.

``<stem>.safetensors`` holds the model's state dict and, for resumable checkpoints,
the optimizer's tensors under ``optim/<param index>/<key>``, and the training state
(epoch, metrics, optimizer hyper-parameters) as JSON in its own header
(``hrnet_edge_state``): weights and state are one file, written atomically, so no
interruption can pair the weights of one epoch with the state of another.
``<stem>.json`` is a readable copy of that state plus the file's sha256, written
after; readers take the state from the checkpoint itself. Checkpoints written before
the state was embedded are read from their JSON, verified against its sha256.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrnet_edge.errors import CheckpointError
from hrnet_edge.faults import kill_point
from hrnet_edge.io import atomic_path, jsonable, sha256_file, write_json

OPTIM_PREFIX = "optim/"
STATE_KEY = "hrnet_edge_state"


def save_checkpoint(path: Path, model: nn.Module, state: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta_state = dict(state)
    if optimizer is not None:
        opt = optimizer.state_dict()
        for idx, pstate in opt["state"].items():
            for key, value in pstate.items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"{OPTIM_PREFIX}{idx}/{key}"] = t.detach().contiguous().cpu()
        meta_state["optimizer_param_groups"] = opt["param_groups"]
    path = Path(path)
    # key order kept: a resumed run's history rows (metrics.csv columns) keep their order
    header = {"format": "hrnet-edge", STATE_KEY: json.dumps(meta_state, default=jsonable)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    kill_point(f"pair:{path.name}")  # the checkpoint is whole; its readable copy is not written yet
    meta_state["sha256"] = sha256_file(path)
    write_json(path.with_suffix(".json"), meta_state)
    return path


def _embedded_state(path: Path) -> dict[str, Any] | None:
    """The state in the checkpoint's own header (None for a checkpoint without one)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a valid safetensors file: {exc}") from None
    if STATE_KEY not in header:
        return None
    try:
        return json.loads(header[STATE_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} carries a corrupt training state: {exc}") from None


def read_state(path: Path) -> dict[str, Any]:
    """The training state of a checkpoint, with the checkpoint file's ``sha256``.

    Raises:
        CheckpointError: the file is missing or corrupt; for a checkpoint without an
            embedded state, its JSON is missing, corrupt or records another file's hash.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = _embedded_state(path)
    sha = sha256_file(path)
    if state is not None:
        return {**state, "sha256": sha}
    side = path.with_suffix(".json")
    if not side.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {side.name} is missing")
    try:
        state = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint sidecar {side} is corrupt: {exc}") from None
    if state.get("sha256") not in (None, sha):
        raise CheckpointError(f"checkpoint {path} and {side.name} do not belong together (an interrupted "
                              "write?); re-run the stage that wrote them")
    return {**state, "sha256": sha}


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with a clear error when it is unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a valid safetensors file: {exc}") from exc


def _tower_depth(keys: set[str]) -> int:
    """Conv layers in the first detection tower (``head.towers.0.<layer>.*``), 0 if none."""
    layers = {k.split(".")[3] for k in keys if k.startswith("head.towers.0.")}
    return len(layers)


def _tower_hint(saved: set[str], expected: set[str]) -> str:
    """What to set when the checkpoint's detection towers have another depth than the
    model's (runs made before the edge widths' towers went from two convs to one hold
    two-conv checkpoints); empty otherwise."""
    have, want = _tower_depth(saved), _tower_depth(expected)
    if not have or not want or have == want:
        return ""
    return (f"; its detection towers have {have} conv layers and this model's {want}: set "
            f"det_tower_convs = {have} in the run's model_overrides (config.json) or "
            f"under [model_overrides] in its configuration file")


def load_model_weights(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load model weights from ``path`` strictly; return the sidecar state."""
    tensors = load_tensors(path)
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIM_PREFIX)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: {len(missing)} missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} with another shape {wrong[:3]} (was it trained with another variant?)"
            + _tower_hint(set(weights), set(expected))
        )
    model.load_state_dict(weights)
    if _embedded_state(path) is None and not Path(path).with_suffix(".json").is_file():
        return {"sha256": sha256_file(path)}  # a plain weights file, no training state
    return read_state(path)


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: Path, state: dict[str, Any]) -> None:
    """Restore optimizer tensors and hyper-parameters saved by :func:`save_checkpoint`."""
    tensors = load_tensors(path)
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIM_PREFIX):
            idx, name = key[len(OPTIM_PREFIX):].split("/", 1)
            per_param.setdefault(int(idx), {})[name] = value
    groups = state.get("optimizer_param_groups")
    if groups is None:
        raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
