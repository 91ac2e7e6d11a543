"""Lazy import of heavy optional backends."""
from __future__ import annotations

import importlib
from types import ModuleType

from hrnet_edge.errors import MissingDependency


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the pip extra.

    Args:
        module: dotted module name, e.g. ``"openvino"``.
        extra: the hrnet-edge extra that installs it, e.g. ``"openvino"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # a missing backend, or one whose own deps are broken
        raise MissingDependency(module, extra) from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported (without raising)."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
