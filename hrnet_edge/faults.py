"""A test hook that kills the process at named points, to prove interrupted runs recover.

``HRNET_EDGE_KILL_AT=<point>`` makes :func:`kill_point` send SIGKILL to its own process
when execution reaches that point (no clean-up, no ``finally``: what a power cut or the
OOM killer does). Unset, the hook does nothing. ``tests/test_hardening_kill.py`` names
the points it uses; a point is a plain string such as ``"train:after-epoch"`` or
``"write:best.safetensors"`` (every atomic write has ``write:<file name>`` before its
rename and, for folders, ``swap:<folder name>`` between moving the old one aside and
renaming the new one into place).
"""
from __future__ import annotations

import os
import signal

ENV = "HRNET_EDGE_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process if ``$HRNET_EDGE_KILL_AT`` names ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
