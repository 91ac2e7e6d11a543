"""Typed errors of hrnet-edge.

Every error a user can cause derives from :class:`HRNetEdgeError`; the CLI turns
these into one clear line and exit code 2. Messages name what was wrong and what is
valid.
"""
from __future__ import annotations

from difflib import get_close_matches
from typing import Iterable


class HRNetEdgeError(Exception):
    """Base class of every error the package raises on purpose."""


class ConfigError(HRNetEdgeError, ValueError):
    """A configuration value, variant name or override is invalid."""


class MissingDependency(HRNetEdgeError, ImportError):
    """An optional backend is not installed; the message carries the install hint."""

    def __init__(self, module: str, extra: str):
        self.module = module
        self.extra = extra
        super().__init__(
            f"optional dependency '{module}' is not installed; "
            f"install it with: pip install 'hrnet-edge[{extra}]' -c constraints.txt"
        )


class DataError(HRNetEdgeError, ValueError):
    """A dataset file or annotation is missing or malformed."""


class CheckpointError(HRNetEdgeError, ValueError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class RunDirError(HRNetEdgeError, ValueError):
    """A run directory lacks what a stage needs (e.g. export before training)."""


class CorruptFileError(RunDirError):
    """A file in a run directory is truncated, not valid JSON, or not what its record says."""


class ExportError(HRNetEdgeError, RuntimeError):
    """A converter failed to produce a valid artifact."""


class ParityError(HRNetEdgeError, RuntimeError):
    """An artifact's outputs differ from the PyTorch model beyond the threshold."""


def unknown_choice(kind: str, value: str, valid: Iterable[str]) -> ConfigError:
    """Build a ConfigError for an unknown name, listing close matches and choices."""
    valid = sorted(valid)
    close = get_close_matches(value, valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(valid[:12]) + (" ..." if len(valid) > 12 else "")
    return ConfigError(f"unknown {kind} {value!r}.{hint} Valid: {shown}")
