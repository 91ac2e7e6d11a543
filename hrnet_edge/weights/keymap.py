"""Key maps: how the state-dict names of a published checkpoint become hrnet-edge's.

A map is data (``maps/<source>.json``), one per source. Its ``modules`` rules map a
module path of the source (a key without its last part) to hrnet-edge's: the first rule
whose regular expression matches the whole path wins, and the key's last part (weight,
bias, running_mean, ...) is kept. Other fields say how to get at the tensors:

- ``include``: maps whose rules come after this one's (``backbone`` is shared by every
  HRNet project);
- ``detect``: keys whose presence marks a file of this source;
- ``strip_prefixes``: a prefix every key carries (``model.``, ``module.``) is removed;
- ``ignore``: keys (regular expressions) that hold no weights of the model;
- ``fold_conv_bias``: (conv, BN) module pairs of the source whose conv has a bias where
  hrnet-edge's has none; the bias goes into the BN's running mean, which BN subtracts
  right after the conv, so the function is the same;
- ``expects``: model config values the checkpoint was trained with (a loaded model
  whose config differs still loads, with a note);
- ``widths``, ``notes``: facts for people.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from hrnet_edge.errors import unknown_choice

MAPS_DIR = Path(__file__).with_name("maps")
# The order in which ``source = "auto"`` tries the maps' ``detect`` keys.
SOURCES = ("hrnet-edge", "timm", "seg", "pose")


@dataclass(frozen=True)
class KeyMap:
    """One source's key map (see the module docstring)."""

    name: str
    description: str
    rules: tuple[tuple[re.Pattern, str], ...]
    detect: tuple[str, ...] = ()
    strip_prefixes: tuple[str, ...] = ()
    ignore: tuple[re.Pattern, ...] = ()
    fold_conv_bias: tuple[tuple[re.Pattern, str], ...] = ()
    expects: dict = field(default_factory=dict)
    widths: dict = field(default_factory=dict)
    notes: str = ""

    def target_of(self, key: str) -> str | None:
        """hrnet-edge's name for the source ``key`` (None: no rule takes it)."""
        path, _, leaf = key.rpartition(".")
        for pattern, template in self.rules:
            m = pattern.fullmatch(path)
            if m:
                return f"{m.expand(template)}.{leaf}"
        return None

    def prepare(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with ignored keys dropped, a shared prefix stripped and conv biases
        folded into the BN that follows (a new dict; the input is not changed)."""
        state = {k: v for k, v in state.items() if not any(p.fullmatch(k) for p in self.ignore)}
        for prefix in self.strip_prefixes:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
        for conv, bn_template in self.fold_conv_bias:
            for key in [k for k in state if k.endswith(".bias")]:
                m = conv.fullmatch(key[: -len(".bias")])
                mean_key = f"{m.expand(bn_template)}.running_mean" if m else None
                if m and mean_key in state and state[mean_key].shape == state[key].shape:
                    state[mean_key] = state[mean_key] - state.pop(key)
        return state

    def detects(self, keys) -> bool:
        return bool(self.detect) and all(k in keys for k in self.detect)


def _read(name: str) -> dict:
    path = MAPS_DIR / f"{name}.json"
    if not path.is_file():
        raise unknown_choice("weights source", name, SOURCES)
    return json.loads(path.read_text())


@lru_cache(maxsize=None)
def get_map(name: str) -> KeyMap:
    """The key map of source ``name`` (one of :data:`SOURCES`), with its includes."""
    if name not in SOURCES:
        raise unknown_choice("weights source", name, SOURCES)
    data = _read(name)
    rules = list(data.get("modules", []))
    for inc in data.get("include", []):
        rules += _read(inc).get("modules", [])
    return KeyMap(
        name=data["name"],
        description=data.get("description", ""),
        rules=tuple((re.compile(p), t) for p, t in rules),
        detect=tuple(data.get("detect", ())),
        strip_prefixes=tuple(data.get("strip_prefixes", ())),
        ignore=tuple(re.compile(p) for p in data.get("ignore", ())),
        fold_conv_bias=tuple((re.compile(p), t) for p, t in data.get("fold_conv_bias", ())),
        expects=dict(data.get("expects", {})),
        widths=dict(data.get("widths", {})),
        notes=data.get("notes", ""),
    )
