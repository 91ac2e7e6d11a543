"""Type and range checks of configuration dataclasses, before anything uses them.

A frozen dataclass accepts whatever it is given: ``epochs = "three"`` or ``width = 8.5``
used to travel into the run directory and fail later as a traceback. :func:`check_fields`
compares every field with its annotation (``int``, ``float``, ``tuple[int, int]``,
``str | None`` ...) and with the ranges in :data:`RANGES`, and raises one
:class:`~hrnet_edge.errors.ConfigError` naming the field, the value and what is valid.
This module imports no torch.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable, Union

from hrnet_edge.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]


def at_least(lo: float) -> Rule:
    return (lambda v: v >= lo), f">= {lo}"


def positive() -> Rule:
    return (lambda v: v > 0), "> 0"


def in_unit(lo_open: bool = False, hi_open: bool = True) -> Rule:
    lo, hi = ("(" if lo_open else "["), (")" if hi_open else "]")
    return ((lambda v: (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1)),
            f"in {lo}0, 1{hi}")


# (section, field) -> rule; a tuple field's rule applies to each element. The section
# is the name shown in messages: train, qat, export, check, data, eval, model.
RANGES: dict[tuple[str, str], Rule] = {
    ("train", "epochs"): at_least(1), ("train", "batch_size"): at_least(1),
    ("train", "lr"): positive(), ("train", "weight_decay"): at_least(0),
    ("train", "momentum"): in_unit(), ("train", "poly_power"): positive(),
    ("train", "milestones"): at_least(1), ("train", "label_smoothing"): in_unit(),
    ("train", "warmup_epochs"): at_least(0), ("train", "seed"): at_least(0),
    ("train", "val_every"): at_least(1), ("train", "processes"): at_least(1),
    ("qat", "calibration_images"): at_least(1), ("qat", "epochs"): at_least(0),
    ("qat", "lr"): positive(), ("qat", "batch_size"): at_least(1), ("qat", "steps_per_epoch"): at_least(0),
    ("export", "calibration_images"): at_least(1),
    ("check", "threads"): at_least(1), ("check", "warmup"): at_least(0),
    ("check", "iterations"): at_least(1), ("check", "parity_images"): at_least(1),
    ("check", "eval_images"): at_least(1), ("check", "natural_images"): at_least(0),
    ("data", "synthetic_train_images"): at_least(1), ("data", "synthetic_val_images"): at_least(1),
    ("data", "synthetic_classes"): at_least(2), ("data", "synthetic_train_per_class"): at_least(1),
    ("data", "synthetic_val_per_class"): at_least(1), ("data", "synthetic_image_size"): at_least(32),
    ("data", "seed"): at_least(0), ("data", "workers"): at_least(0), ("data", "sigma"): positive(),
    ("data", "rotation"): at_least(0), ("data", "scale_factor"): in_unit(),
    ("data", "scale_range"): positive(), ("data", "max_objects"): at_least(1),
    ("eval", "score_threshold"): in_unit(), ("eval", "iou_threshold"): in_unit(lo_open=True, hi_open=False),
    ("eval", "pre_nms_topk"): at_least(1), ("eval", "max_detections"): at_least(1),
    ("eval", "agreement_score"): in_unit(), ("eval", "agreement_iou"): in_unit(lo_open=True, hi_open=False),
    ("eval", "resize_ratio"): in_unit(lo_open=True, hi_open=False),
    ("model", "std"): positive(), ("model", "head_channels"): at_least(1),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (what a JSON/TOML file can hold)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True  # a type this table does not know: the dataclass's own checks apply


def describe(hint: Any) -> str:
    """The annotation in a user's words: 'an integer', 'a list of 2 integers' ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}" if len(set(args)) == 1 else "a list"
    if origin is dict or hint is dict:
        return "a table/object"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "text"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, describe(hint))


def shown(value: Any) -> str:
    """A value as the user wrote it (tuples were lists in the file), shortened."""
    text = repr(list(value) if isinstance(value, tuple) else value)
    return (text[:60] + "...") if len(text) > 63 else text


def check_fields(obj: Any, section: str) -> None:
    """Raise ConfigError unless every field of dataclass ``obj`` fits its annotation and
    its range in :data:`RANGES` (``section`` names it in the message and the table)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints.get(f.name, Any)
        if dataclasses.is_dataclass(value):
            continue
        if not matches(value, hint):
            raise ConfigError(f"[{section}] {f.name} must be {describe(hint)}, got {shown(value)} "
                              f"({_type_name(value)})")
        rule = RANGES.get((section, f.name))
        if rule is None or value is None:
            continue
        ok, text = rule
        items = value if isinstance(value, (tuple, list)) else (value,)
        bad = [v for v in items if _is_number(v) and not ok(v)]
        if bad:
            each = " (each)" if isinstance(value, (tuple, list)) else ""
            raise ConfigError(f"[{section}] {f.name} must be {text}{each}, got {shown(value)}")


def _type_name(value: Any) -> str:
    return "list" if isinstance(value, tuple) else type(value).__name__
