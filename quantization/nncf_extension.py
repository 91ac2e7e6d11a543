"""NNCF's compiled CPU extension: built into the project's virtual environment, and
never waited on forever.

NNCF JIT-compiles its fake-quantize kernels with ``torch.utils.cpp_extension.load``.
Two things went wrong with torch's defaults:

* The build folder is ``~/.cache/torch_extensions/py311_cpu/nncf/...``, one for every
  virtual environment of the user. Its ``build.ninja`` names the venv's include paths,
  so a second checkout rebuilt it (about 3 minutes on 2 cores) and the two kept
  rebuilding each other's. :func:`configure_extensions_dir` (called when ``hrnet_edge``
  is imported) moves it under the venv, unless the user set ``TORCH_EXTENSIONS_DIR``.
* torch guards a build with a ``lock`` file (``torch.utils.file_baton.FileBaton``):
  created with ``O_EXCL``, held open while building, removed afterwards. A process
  killed in between leaves it behind and every later process waits on it, silently and
  forever (a QAT check stood 604 s before the file was removed by hand).
  :func:`ensure_extension` looks first: a lock that no live process holds open is
  removed with one line on stderr; one held by a live process is waited on with one
  line naming it, up to a limit, then reported as :class:`ExtensionLockError`.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hrnet_edge.deps import configure_extensions_dir, require
from hrnet_edge.errors import HRNetEdgeError

EXTENSION = "quantized_functions_cpu"
# How long to wait on a lock that a live process holds (a build takes ~3 min on 2 cores).
DEFAULT_WAIT_S = 900
_loaded = False

__all__ = ["ExtensionLockError", "build_dir", "configure_extensions_dir", "ensure_extension",
           "lock_holders"]


class ExtensionLockError(HRNetEdgeError, RuntimeError):
    """NNCF's extension build folder stays locked by a live process."""


def build_dir() -> Path:
    """The folder torch builds NNCF's CPU extension in (it need not exist yet)."""
    import torch
    from torch.utils.cpp_extension import _get_build_directory

    # NNCF's own layout: <TORCH_EXTENSIONS_DIR>/py311_cpu/nncf/<name>/<torch version>.
    # _get_build_directory creates the parent folder, as NNCF's call of it does.
    return Path(_get_build_directory(f"nncf/{EXTENSION}", verbose=False)) / torch.__version__


def lock_holders(lock: Path) -> list[int]:
    """PIDs of live processes that hold ``lock`` open (Linux: read from /proc).

    torch's FileBaton keeps the lock's descriptor open for the whole build and closes it
    just before removing the file, so an existing lock that nobody holds open was left
    by a process that died. Processes whose /proc entries we may not read are skipped.
    """
    target = os.path.realpath(lock)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    pids.append(int(entry.name))
                    break
            except OSError:
                continue
    return pids


def _command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]


def clear_stale_lock(lock: Path, wait_s: float | None = None, poll_s: float = 0.5) -> str:
    """Make sure ``lock`` will not stall a load; return what was found.

    Returns:
        ``"none"`` (no lock), ``"removed"`` (a stale lock was removed) or ``"released"``
        (a live holder finished while we waited).

    Raises:
        ExtensionLockError: a live process still holds the lock after ``wait_s`` seconds.
    """
    if not lock.exists():
        return "none"
    if not Path("/proc/self/fd").is_dir():  # no /proc (macOS): cannot tell; let torch wait
        print(f"hrnet-edge: NNCF's extension build folder is locked by {lock}; if no other "
              "process is building it, delete that file", file=sys.stderr)
        return "none"
    wait_s = float(os.environ.get("HRNET_EDGE_EXTENSION_WAIT", DEFAULT_WAIT_S)) if wait_s is None else wait_s
    start, told = time.monotonic(), False
    while True:
        try:
            inode = lock.stat().st_ino
        except FileNotFoundError:
            return "released"
        holders = lock_holders(lock)
        if not holders:
            # The holder closes the file just before removing it: look twice, so a lock
            # being released right now is not taken for a stale one.
            time.sleep(poll_s)
            try:
                if lock.stat().st_ino != inode or lock_holders(lock):
                    continue
            except FileNotFoundError:
                return "released"
            lock.unlink(missing_ok=True)
            print(f"hrnet-edge: removed a stale lock left by a process that ended while building "
                  f"NNCF's extension: {lock}", file=sys.stderr)
            return "removed"
        waited = time.monotonic() - start
        if waited > wait_s:
            raise ExtensionLockError(
                f"NNCF's extension build folder is still locked by process {holders[0]} "
                f"({_command_of(holders[0])}) after {waited:.0f} s: {lock}. If that process is "
                "stuck, stop it; the lock is then cleared on the next run "
                "(HRNET_EDGE_EXTENSION_WAIT sets the wait in seconds)")
        if not told:
            print(f"hrnet-edge: waiting for process {holders[0]} ({_command_of(holders[0])}) to "
                  f"finish building NNCF's extension (lock {lock})", file=sys.stderr)
            told = True
        time.sleep(poll_s)


def ensure_extension(wait_s: float | None = None) -> None:
    """Load NNCF's CPU extension once per process, building it when needed.

    Clears a stale build lock first (see :func:`clear_stale_lock`), then loads through
    NNCF's own lazy namespace, so NNCF's timeout (``NNCF_EXTENSION_LOAD_TIMEOUT``) and
    its fallback to reference kernels apply as usual.

    Raises:
        ExtensionLockError: a live process holds the build lock for longer than allowed.
        MissingDependency: nncf is not installed.
    """
    global _loaded
    if _loaded:
        return
    configure_extensions_dir()
    require("nncf", "qat")
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU

    clear_stale_lock(build_dir() / "lock", wait_s)
    QuantizedFunctionsCPU.get("Quantize_forward")
    _loaded = True
