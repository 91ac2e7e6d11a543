"""Two check processes at once, each timing its artifact alone.

Most of a check is not latency: starting Python, importing a runtime, loading the
artifact, running and decoding the validation images, COCOeval. Much of that is
single-threaded, so two checks overlap well on two cores. The timed runs must not
overlap with anything, so every check process holds a shared lock on
``checks/.cpu.lock`` while it works and trades it for an exclusive one while it times
its artifact: the other process's work waits (at its next lock) while latency is
measured, and a measurement waits until no other process is working.

The lock is advisory and per run directory. Where ``fcntl`` is missing (Windows) the
stage runs one check process at a time and the locks do nothing.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_NAME = ".cpu.lock"
_held: dict[str, int] = {}  # this process's lock: {"fd": file descriptor}


def parallel_checks() -> int:
    """How many check processes the check stage runs at once."""
    return 2 if fcntl is not None and (os.cpu_count() or 1) >= 2 else 1


@contextmanager
def working(checks_dir: Path) -> Iterator[None]:
    """Hold the shared lock of ``checks_dir`` for the body (one check process's work)."""
    if fcntl is None:
        yield
        return
    checks_dir = Path(checks_dir)
    checks_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(checks_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held["fd"] = fd
        yield
    finally:
        _held.pop("fd", None)
        os.close(fd)  # releases the lock


@contextmanager
def alone() -> Iterator[None]:
    """While the body runs no other check process of the run works (exclusive lock).

    Outside :func:`working` (a check called in-process, e.g. by a test) it does nothing.
    """
    fd = _held.get("fd")
    if fcntl is None or fd is None:
        yield
        return
    # flock converts shared -> exclusive by dropping the shared lock first, so two
    # processes asking at once cannot deadlock: one gets it, the other waits.
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_SH)
