"""Save and restore an NNCF QAT model without pickle: safetensors + JSON.

A QAT checkpoint is a folder holding

* ``qat.safetensors``: the QAT model's ``state_dict`` (weights, BatchNorm statistics,
  quantizer scales and flags, under NNCF's ``__nncf_hooks.*`` keys);
* ``qat_config.json``: where NNCF put each quantizer (``nncf.torch.get_config``),
  the SHA-256 of the weights file and the versions that wrote it.

``nncf.torch.get_config`` returns plain Python data, but not JSON data: ``mode`` is a
``QuantizationScheme`` (a str enum) and ``scale_shape`` a tuple. ``json.dumps``
accepts it and silently turns them into ``"symmetric"`` and a list; NNCF's
``PTQuantizerSpec`` then computes ``per_channel = scale_shape != (1,)``, which is True
for the list ``[1]``. So the config is written with tagged tuples and enums
(:func:`encode_config`) and read back to exactly what ``get_config`` returned.
"""
from __future__ import annotations

import copy
import fnmatch
import importlib
import json
import math
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrnet_edge.errors import CheckpointError, ConfigError
from hrnet_edge.io import atomic_path, sha256_file, write_json
from quantization.nncf_qat import require_nncf

WEIGHTS_FILE = "qat.safetensors"
CONFIG_FILE = "qat_config.json"
FORMAT = "hrnet-edge-nncf-qat"
FORMAT_VERSION = 1
_TUPLE, _ENUM = "__tuple__", "__enum__"
# Enums are only re-imported from NNCF, as nncf.torch.load_from_config restricts
# module classes to "nncf.*": a checkpoint must not name arbitrary code to import.
_ALLOWED_ENUM_MODULES = ("nncf.*",)


def save_qat(qat_model: nn.Module, directory: str | Path, example_input: torch.Tensor | None = None,
             metadata: dict[str, Any] | None = None) -> Path:
    """Write ``qat.safetensors`` then ``qat_config.json`` into ``directory``, atomically.

    The JSON is written last and records the weights' SHA-256, so a folder interrupted
    between the two writes is detected by :func:`load_qat` instead of mixing versions.

    Args:
        qat_model: a model from ``quantize_model`` (or ``load_qat``).
        directory: the checkpoint folder (created if missing).
        example_input: recorded as ``input_shape`` for the reader's information.
        metadata: extra JSON-serialisable facts to store (e.g. the variant name).

    Returns:
        ``directory``.
    """
    require_nncf()
    import nncf
    import nncf.torch
    from nncf.torch.function_hook.wrapper import is_wrapped
    from safetensors.torch import save_file

    # nncf.torch.is_wrapped_model checks the legacy GraphModelWrapper; 3.4's
    # nncf.quantize marks a model with wrapper.is_wrapped instead.
    if not is_wrapped(qat_model):
        raise ConfigError("save_qat expects an NNCF model from quantize_model/load_qat; got a plain module")
    try:
        config = encode_config(nncf.torch.get_config(qat_model))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot serialise the NNCF config to JSON: {exc}") from exc
    directory = Path(directory)
    # clone: a quantizer shared by several hooks appears under several keys, and
    # safetensors refuses tensors that share memory.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in qat_model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha256_file(directory / WEIGHTS_FILE),
        "input_shape": list(example_input.shape) if example_input is not None else None,
        "versions": {"nncf": nncf.__version__, "torch": torch.__version__},
        "metadata": metadata or {},
        "nncf_config": config,
    }
    write_json(directory / CONFIG_FILE, doc)
    return directory


def load_qat(float_model: nn.Module, directory: str | Path, example_input: torch.Tensor) -> nn.Module:
    """Rebuild a QAT model written by :func:`save_qat` on top of a float model.

    Args:
        float_model: the float model the QAT model was made from (same architecture;
            its weights are replaced). It is copied, not changed.
        directory: the checkpoint folder.
        example_input: one input batch; a forward pass checks that every restored
            quantizer is reached, since NNCF inserts hooks by op name and a hook
            whose op does not exist in this model would be skipped silently.

    Returns:
        The QAT model in eval mode.

    Raises:
        CheckpointError: a file is missing or corrupt, the two files do not belong
            together, or the checkpoint does not fit ``float_model``.
        ConfigError: ``float_model`` already carries NNCF quantizers.
    """
    require_nncf()
    import nncf.torch
    from nncf.torch.function_hook.wrapper import is_wrapped

    doc, state = _read_checkpoint(Path(directory))
    if is_wrapped(float_model):
        raise ConfigError("load_qat expects the float model (as built by create_model), "
                          "not one that already carries NNCF quantizers")
    model = copy.deepcopy(float_model).eval()
    try:
        qm = nncf.torch.load_from_config(model, doc["nncf_config"])
    except Exception as exc:  # nncf raises InternalError, KeyError, ValueError... on a bad config
        raise CheckpointError(f"NNCF could not restore the quantizers from {directory}: {exc}") from exc
    try:
        qm.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the QAT checkpoint in {directory} does not fit this model: "
                              f"{_shorten(str(exc))}") from exc
    _check_quantizers_reached(qm, example_input, directory)
    return qm.eval()


def _read_checkpoint(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and cross-check both files; returns (config document, state dict)."""
    from safetensors.torch import load_file

    cfg_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"missing {path}: a QAT checkpoint folder holds {CONFIG_FILE} and "
                                  f"{WEIGHTS_FILE}, written by save_qat ('hrnet-edge qat')")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "nncf_config" not in doc:
        raise CheckpointError(f"{cfg_path} is not an hrnet-edge QAT config (format {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format_version {doc.get('format_version')!r}; "
                              f"this version reads {FORMAT_VERSION}")
    if sha256_file(weights_path) != doc.get("weights_sha256"):
        raise CheckpointError(f"{weights_path} does not match the SHA-256 recorded in {cfg_path}: "
                              "the file is corrupt or from another save")
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own SafetensorError (not exported)
        raise CheckpointError(f"cannot read {weights_path}: {exc}") from exc
    try:
        doc["nncf_config"] = decode_config(doc["nncf_config"])
    except (TypeError, ValueError, ImportError, AttributeError) as exc:
        raise CheckpointError(f"bad nncf_config in {cfg_path}: {exc}") from exc
    return doc, state


@torch.no_grad()
def _check_quantizers_reached(qm: nn.Module, example_input: torch.Tensor, directory) -> None:
    from nncf.torch.function_hook.wrapper import get_hook_storage

    hooks = dict(get_hook_storage(qm).named_hooks())
    reached: set[str] = set()
    handles = [m.register_forward_hook(lambda *_, n=name: reached.add(n)) for name, m in hooks.items()]
    try:
        qm.eval()(example_input)
    except Exception as exc:
        raise CheckpointError(f"the QAT model restored from {directory} fails on the example input "
                              f"{tuple(example_input.shape)}: {_shorten(str(exc))}") from exc
    finally:
        for h in handles:
            h.remove()
    missed = sorted(set(hooks) - reached)
    if missed:
        raise CheckpointError(f"the QAT checkpoint in {directory} does not fit this model: {len(missed)} of "
                              f"{len(hooks)} quantizers sit on ops the model does not run, e.g. {missed[0]}")


def _shorten(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


# --- faithful JSON for the NNCF config ------------------------------------------------

def encode_config(value: Any) -> Any:
    """Turn an ``nncf.torch.get_config`` result into JSON data, keeping tuples and enums.

    A tuple becomes ``{"__tuple__": [...]}``, an enum member
    ``{"__enum__": "module:Class", "value": ...}``; dicts (string keys), lists, str,
    int, finite float, bool and None pass through. Anything else raises TypeError.
    """
    if isinstance(value, Enum):  # before str: NNCF's enums subclass str
        cls = type(value)
        return {_ENUM: f"{cls.__module__}:{cls.__qualname__}", "value": encode_config(value.value)}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite float {value} has no JSON form")
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [encode_config(v) for v in value]}
    if isinstance(value, list):
        return [encode_config(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k in (_TUPLE, _ENUM):
                raise TypeError(f"dict key {k!r} cannot be stored (keys must be strings other "
                                f"than {_TUPLE!r} and {_ENUM!r})")
            out[k] = encode_config(v)
        return out
    raise TypeError(f"cannot store a {type(value).__module__}.{type(value).__qualname__} in JSON")


def decode_config(value: Any) -> Any:
    """Inverse of :func:`encode_config`; enums are imported from ``nncf.*`` only."""
    if isinstance(value, list):
        return [decode_config(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TUPLE}:
        return tuple(decode_config(v) for v in value[_TUPLE])
    if set(value) == {_ENUM, "value"}:
        return _enum_member(value[_ENUM], decode_config(value["value"]))
    return {k: decode_config(v) for k, v in value.items()}


def _enum_member(path: str, raw: Any) -> Enum:
    module_name, _, qualname = str(path).partition(":")
    if not any(fnmatch.fnmatchcase(module_name, p) for p in _ALLOWED_ENUM_MODULES):
        raise ValueError(f"refusing to import enum {path!r}: only {_ALLOWED_ENUM_MODULES} are allowed")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Enum)):
        raise TypeError(f"{path!r} is not an Enum class")
    return obj(raw)
