"""The project's own output, apart from what third-party libraries print.

A run prints a few lines per stage and one progress bar per long step. The libraries
underneath print far more that a user can do nothing about: TensorFlow and absl
start-up lines, "Could not find cuda drivers", torchao's missing CUDA kernels,
coremltools' macOS-only proxies and MIL pass bars, NNCF's extension notices.
:func:`chatter_to` sends all of that (Python ``sys.stdout``/``sys.stderr`` and the
process's file descriptors 1 and 2, which C++ code writes to) into a log file in the
run directory, while :func:`say` and :func:`bar_stream` keep reaching the terminal.
A child process started with :func:`child_console` inherits the terminal the same way.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

ENV_FD = "HRNET_EDGE_CONSOLE_FD"

_out: TextIO | None = None  # the terminal while chatter goes to a log
_fd: int | None = None  # its file descriptor, for children


# ENV_FD's value for a child that got the log as stdout and the terminal as stderr
# (torchrun's processes: torchrun passes them no other descriptor); see attach().
STDERR_IS_TERMINAL = "stderr"


def attach() -> None:
    """At a process's start: a child of a redirected run takes the terminal its parent
    passed. One that got the terminal as stderr (:data:`STDERR_IS_TERMINAL`) moves it
    to a descriptor of its own and sends stderr to the log beside stdout."""
    global _out, _fd
    if _out is None and os.environ.get(ENV_FD) == STDERR_IS_TERMINAL:
        sys.stderr.flush()
        _fd = os.dup(2)
        os.dup2(1, 2)
        _out = open(_fd, "w", buffering=1, closefd=False)
        os.environ[ENV_FD] = str(_fd)  # its own children (with child_console) inherit it as usual
    _attached()


def _attached() -> TextIO | None:
    global _out, _fd
    if _out is None and os.environ.get(ENV_FD, "").isdigit():
        try:  # a child of a redirected run: the parent passed the terminal's descriptor
            _fd = int(os.environ[ENV_FD])
            _out = open(_fd, "w", buffering=1, closefd=False)
        except OSError:
            _out, _fd = None, None
    return _out


def say(message: str) -> None:
    """One line of the project's own output: to the terminal, and into the run log."""
    out = _attached()
    if out is None:
        print(message, flush=True)
        return
    print(message, file=out, flush=True)
    print(message, file=sys.stdout, flush=True)  # the log keeps the story in order


def bar_stream() -> TextIO:
    """Where progress bars go: the terminal (stderr when nothing is redirected)."""
    return _attached() or sys.stderr


def child_console() -> tuple[dict[str, str], tuple[int, ...]]:
    """(env, pass_fds) for ``subprocess.Popen`` so a child's :func:`say` reaches the terminal."""
    env = dict(os.environ)
    if _attached() is None or _fd is None:
        env.pop(ENV_FD, None)
        return env, ()
    env[ENV_FD] = str(_fd)
    return env, (_fd,)


def _terminal_stream(stream: TextIO) -> tuple[TextIO, int | None]:
    """A stream on which the project's lines still reach what ``stream`` reached."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream, None  # an in-memory capture (tests): keep writing to it
    if fd not in (1, 2):
        return stream, None  # already a file of its own, unaffected by the redirect
    dup = os.dup(fd)
    return open(dup, "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="replace"), dup


@contextlib.contextmanager
def chatter_to(path: Path, enabled: bool = True) -> Iterator[Path | None]:
    """Within the block, third-party output goes to ``path`` (appended); the project's
    lines (:func:`say`, :func:`bar_stream`) still reach the terminal.

    Yields the log path, or None when not ``enabled`` (``--verbose``) or when output is
    already redirected (a nested call, or a child process of a redirected run).
    """
    global _out, _fd
    if not enabled or _attached() is not None:
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    term, term_fd = _terminal_stream(sys.stdout)
    saved_fds = (os.dup(1), os.dup(2))
    saved_streams = (sys.stdout, sys.stderr)
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        _out, _fd = term, term_fd
        yield path
    finally:
        sys.stdout, sys.stderr = saved_streams
        _out, _fd = None, None
        log.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        log.close()
        if term_fd is not None:
            term.close()


def tail(path: Path, lines: int = 15) -> list[str]:
    """The last ``lines`` lines of a log (empty when it does not exist)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]
