"""Typed errors of the decoders.

Every error a decoder raises on purpose derives from :class:`DecodeError`, which is
both one of the runtime's errors (:class:`~hrnet_edge_runtime.errors.RuntimeErrorBase`,
which ``hrnet-edge-run`` reports as one line) and a ``ValueError``; its one-line message
names what was wrong and what is valid.
"""
from __future__ import annotations

from hrnet_edge_runtime.errors import RuntimeErrorBase


class DecodeError(RuntimeErrorBase, ValueError):
    """Base class of every error the decoders raise on purpose."""


class MetadataError(DecodeError):
    """A ``metadata.json`` key a decoder needs is missing or holds an invalid value.

    Attributes:
        key: the dotted path of the key, e.g. ``"output.decoding.config"``.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"metadata.json {key}: {message}")


class DecodeConfigError(DecodeError):
    """A decoding parameter is invalid (threshold, pyramid levels, input size, method)."""


class DecodeInputError(DecodeError):
    """What was handed to a decoder (raw output, context) does not fit it."""
