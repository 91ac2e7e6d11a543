"""Two check processes at once, each timing its artifact alone.

Most of a check is not latency: starting Python, importing a runtime, loading the
artifact, running and decoding the validation images, COCOeval. Much of that is
single-threaded, so two checks overlap well on two cores. The timed runs must not
overlap with anything, so every check process holds a shared lock on
``checks/.cpu.lock`` from its start to its exit and trades it for an exclusive one while
it times its artifact:

* the other check process's work waits (at its next lock) while latency is measured,
  and a measurement waits until no other check process is working;
* a process keeps its shared lock through its exit (the kernel drops it when the
  process is gone), so the runtime teardown of a finished check is not timed into
  the next one's latency;
* the stage holds a shared lock itself while it starts a check process, until the
  child has its own (:func:`run_child`), so a child's start-up (Python, imports) never
  runs during a measurement either;
* after taking the exclusive lock, a measurement waits :data:`SETTLE_SECONDS` for the
  thread pools of a process that has just stopped working to stop spinning.

The lock is advisory and per run directory. Where ``fcntl`` is missing (Windows) the
stage runs one check process at a time and the locks do nothing.
"""
from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_NAME = ".cpu.lock"
ENV = "HRNET_EDGE_CHECK_PROCESSES"
READY_FD_ENV = "HRNET_EDGE_CHECK_READY_FD"
SETTLE_SECONDS = 0.05
_lock_fd: int | None = None  # this check process's lock, held until it exits


def parallel_checks() -> int:
    """How many check processes the check stage runs at once: 2 where flock exists and
    the machine has 2 cores or more; ``$HRNET_EDGE_CHECK_PROCESSES=1`` makes it one."""
    if fcntl is None or (os.cpu_count() or 1) < 2:
        return 1
    return 1 if os.environ.get(ENV, "").strip() == "1" else 2


def _open_shared(checks_dir: Path) -> int:
    checks_dir = Path(checks_dir)
    checks_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(checks_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def hold_for_life(checks_dir: Path) -> None:
    """A check process: take the shared lock of ``checks_dir`` until this process exits,
    then tell the stage (:func:`run_child`) that it may let measurements go on."""
    global _lock_fd
    if fcntl is None or _lock_fd is not None:
        return
    _lock_fd = _open_shared(checks_dir)  # never closed: released by the exit itself
    ready = os.environ.pop(READY_FD_ENV, None)
    if ready is not None:
        try:
            os.write(int(ready), b"1")
            os.close(int(ready))
        except (OSError, ValueError):
            pass  # the stage stopped waiting; nothing to tell


def run_child(checks_dir: Path, cmd: list[str]) -> subprocess.CompletedProcess:
    """Run one check process; returns it completed, stdout and stderr captured as text.

    Until the child holds its own shared lock (:func:`hold_for_life` signals through a
    pipe, or the child exits without), the stage holds one for it."""
    if fcntl is None:
        return subprocess.run(cmd, capture_output=True, text=True)
    fd = _open_shared(checks_dir)
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(cmd, env={**os.environ, READY_FD_ENV: str(write_end)}, pass_fds=(write_end,),
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(write_end)
        write_end = -1
        os.read(read_end, 1)  # the child's signal, or b"" when it exited without one
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        os.close(fd)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@contextmanager
def alone() -> Iterator[None]:
    """While the body runs no other check process of the run works (exclusive lock).

    Outside a check process (no :func:`hold_for_life`, e.g. a check called in-process
    by a test) it does nothing.
    """
    fd = _lock_fd
    if fcntl is None or fd is None:
        yield
        return
    # flock converts shared -> exclusive by dropping the shared lock first, so two
    # processes asking at once cannot deadlock: one gets it, the other waits.
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        time.sleep(SETTLE_SECONDS)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_SH)
