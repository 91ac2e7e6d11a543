"""Where training runs and in which arithmetic: ``[train] device`` and ``precision``.

:func:`resolve` turns the configuration's words into a :class:`Placement`: the torch
device (``auto`` is the process's CUDA device when torch sees CUDA, under torchrun the
one of its ``LOCAL_RANK``, else the CPU) and the precision that runs (``auto`` is bf16
on a CUDA device that supports it and on a CPU with BF16 units, else fp32). What a
machine cannot do is a :class:`~hrnet_edge.errors.ConfigError` naming what it can.

Mixed precision is ``torch.autocast`` around the forward pass only: the loss is
computed in fp32 from the outputs cast back (:func:`as_float`), fp16 scales the loss
with a ``GradScaler``, and weights, optimizer state and checkpoints stay fp32.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hrnet_edge.errors import ConfigError

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with BF16 units
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (where it does not, bf16 is emulated and
    slower than fp32)."""
    return bool(set(BF16_CPU_FLAGS) & cpu_flags())


@dataclass(frozen=True)
class Placement:
    """The resolved device and precision of one process."""

    device: torch.device
    precision: str  # fp32, bf16 or fp16: what runs ("auto" resolved)
    device_name: str

    def autocast(self):
        """The context the forward pass runs in (nothing for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, active for fp16 only (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def record(self) -> dict[str, str]:
        """What the run records of it (training state, QAT metrics)."""
        return {"device": str(self.device), "device_name": self.device_name, "precision": self.precision}

    def describe(self) -> str:
        arithmetic = "fp32" if self.precision == "fp32" else f"{self.precision} autocast"
        return f"device {self.device} ({self.device_name}), {arithmetic}"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device of ``[train] device`` for the process of ``local_rank``."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not name.startswith("cuda") and name != "auto":
        raise ConfigError(f"[train] device {name!r} is not known; valid: auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"[train] device {name!r} needs CUDA, and this torch sees none (a CPU build of torch, "
                          "or no GPU or driver); valid here: auto, cpu")
    index = local_rank if name in ("auto", "cuda") else int(name.split(":", 1)[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"[train] device {name!r}: process {local_rank} would use cuda:{index}, but this "
                          f"machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision of ``[train] precision`` on ``device`` (``auto`` decided here)."""
    cuda = device.type == "cuda"
    if name == "auto":
        fast_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()
        return "bf16" if fast_bf16 else "fp32"
    if name == "fp16" and not cuda:
        raise ConfigError(f"[train] precision 'fp16' runs on CUDA only (autocast with a GradScaler); on "
                          f"{device} valid: fp32, bf16, auto")
    if name not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"[train] precision {name!r} is not known; valid: fp32, bf16, fp16, auto")
    return name


def resolve(train_cfg, local_rank: int = 0) -> Placement:
    """The :class:`Placement` of a ``[train]`` section for the process of ``local_rank``."""
    device = resolve_device(train_cfg.device, local_rank)
    precision = resolve_precision(train_cfg.precision, device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        from hrnet_edge.runs import _cpu_name

        name = _cpu_name()
    return Placement(device, precision, name)


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (tuples, lists, dicts) on ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=device.type == "cuda")
    return _map(batch, lambda v: to_device(v, device))


def as_float(outputs: Any) -> Any:
    """``outputs`` with every floating tensor in fp32 (what autocast made bf16/fp16), so
    the loss is computed in fp32."""
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    return _map(outputs, as_float)


def _map(value: Any, fn) -> Any:
    """``fn`` applied to each item of a tuple (named or not), list or dict; other values
    are returned as they are."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(fn(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(fn(v) for v in value)
    if isinstance(value, dict):
        return {k: fn(v) for k, v in value.items()}
    return value
