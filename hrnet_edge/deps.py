"""Lazy import of heavy optional backends."""
from __future__ import annotations

import importlib
import os
import sys
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


def configure_extensions_dir() -> str | None:
    """Point torch's C++ extension builds (NNCF's fake-quantize kernels) into the venv.

    torch builds them under ``~/.cache/torch_extensions`` by default, one folder shared
    by every virtual environment of the user; the build names the venv's paths, so two
    checkouts rebuilt each other's (about 3 minutes each time). Inside a virtual
    environment this sets ``TORCH_EXTENSIONS_DIR=<venv>/torch_extensions`` unless the
    user has set it; torch reads it when an extension loads, not when torch imports.

    Returns:
        The directory in effect, or None (torch's default, outside a venv).
    """
    if "TORCH_EXTENSIONS_DIR" not in os.environ and sys.prefix != sys.base_prefix:
        os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(sys.prefix, "torch_extensions")
    return os.environ.get("TORCH_EXTENSIONS_DIR")
