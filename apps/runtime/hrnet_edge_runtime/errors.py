"""The errors of hrnet-edge-runtime: one family, each message says what to do.

``hrnet-edge-run`` turns every one of them into a single line on stderr and exit code 2;
anything else escaping is a bug of this package.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# The pip extra of hrnet-edge-runtime that installs each runtime (pyproject.toml).
EXTRAS = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "ai_edge_litert": "litert",
    "executorch": "executorch",
    "coremltools": "coreml",
    "pycocotools": "metrics",  # COCO AP of --labels for pose and det
}


class RuntimeErrorBase(Exception):
    """Base of every error this package raises on purpose."""


class ArtifactError(RuntimeErrorBase):
    """An artifact folder or a result document that cannot be used: missing or
    corrupt files, a sha256 mismatch, an unknown schema or a field of the wrong type."""


class RuntimeUnavailable(RuntimeErrorBase):
    """The runtime an artifact needs cannot run here: not installed (the message names
    the pip extra), needs another OS (Core ML: macOS), or the device asked for is not
    one the runtime lists."""


class LabelsError(RuntimeErrorBase):
    """``--labels`` cannot be used: the file or folder is missing or not of the task's
    format, a picture has no label (or a label no picture), a label names an unknown
    class, or the artifact's task has no metric on labelled pictures."""


class UsageError(RuntimeErrorBase):
    """A bad argument value (a negative count, an unknown hint, an input of the wrong
    shape or dtype)."""


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``."""
    return f'pip install "hrnet-edge-runtime[{extra}]"'


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`RuntimeUnavailable` naming the pip extra.

    Args:
        module: a dotted module name, e.g. ``"ai_edge_litert.interpreter"``.
        extra: the extra that installs it; looked up from the top-level name if None.
    """
    top = module.split(".")[0]
    extra = extra or EXTRAS.get(top, top)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"{module} is not installed or failed to import ({exc}); install it with {install_hint(extra)}"
        ) from exc


def choice(what: str, value: object, choices) -> UsageError:
    """A :class:`UsageError` for ``value`` not among ``choices``, listing them."""
    listed = ", ".join(str(c) for c in choices)
    return UsageError(f"unknown {what} {value!r}; choose one of: {listed}")
