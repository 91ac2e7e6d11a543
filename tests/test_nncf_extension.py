"""NNCF's compiled extension: owned by this venv, and a build lock left by a killed
process never makes a run wait forever."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrnet_edge.deps import available

if not available("nncf"):
    pytest.skip("nncf is not installed (pip install 'hrnet-edge[qat]')", allow_module_level=True)

from quantization.nncf_extension import (  # noqa: E402
    ExtensionLockError, build_dir, clear_stale_lock, ensure_extension, lock_holders,
)

LOAD = ("import hrnet_edge; from quantization.nncf_extension import ensure_extension, build_dir; "
        "ensure_extension(); "
        "from nncf.torch.quantization.extensions import QuantizedFunctionsCPU as Q; "
        "from nncf.torch.quantization.reference import ReferenceQuantizedFunctions as R; "
        "assert Q._loaded_namespace is not R, 'fell back to reference kernels'; "
        "print('BUILD_DIR', build_dir())")


def _hold_open(lock: Path) -> subprocess.Popen:
    """A live process that created ``lock`` the way torch's FileBaton does and keeps it open."""
    code = ("import os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_extension_dir_is_the_venvs():
    if sys.prefix == sys.base_prefix:
        pytest.skip("not inside a virtual environment")
    ensure_extension()
    where = build_dir()
    assert Path(os.environ["TORCH_EXTENSIONS_DIR"]) == Path(sys.prefix) / "torch_extensions"
    assert where.is_relative_to(Path(sys.prefix))
    # the build names this venv's headers: another venv never builds into this folder
    assert f"{sys.prefix}/lib" in (where / "build.ninja").read_text()


def test_users_extensions_dir_is_kept(tmp_path):
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "mine")}
    out = subprocess.run([sys.executable, "-c", "import hrnet_edge, os; print(os.environ['TORCH_EXTENSIONS_DIR'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "mine")


def test_stale_lock_is_removed_and_the_run_goes_on(tmp_path):
    """A lock that no process holds open (its builder was killed) is cleared with one
    line, and the extension loads. The built folder is copied (mtimes kept), so ninja
    finds it up to date and nothing is recompiled."""
    ensure_extension()
    src = build_dir()
    ext_root = tmp_path / "ext"
    dst = ext_root / src.relative_to(Path(os.environ["TORCH_EXTENSIONS_DIR"]))
    shutil.copytree(src, dst)
    (dst / "lock").touch()
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ext_root)}
    start = time.monotonic()
    # torch alone would wait on this lock forever: the timeout is the test's "never hangs"
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"BUILD_DIR {dst}" in out.stdout
    lines = [ln for ln in out.stderr.splitlines() if "stale lock" in ln]
    assert lines == [f"hrnet-edge: removed a stale lock left by a process that ended while building "
                     f"NNCF's extension: {dst / 'lock'}"]
    assert not (dst / "lock").exists()
    print(f"load with a stale lock: {time.monotonic() - start:.1f} s")


def test_live_lock_is_waited_on_then_reported(tmp_path):
    lock = tmp_path / "lock"
    holder = _hold_open(lock)
    try:
        assert lock_holders(lock) == [holder.pid]
        start = time.monotonic()
        with pytest.raises(ExtensionLockError, match=rf"locked by process {holder.pid} .* {lock}"):
            clear_stale_lock(lock, wait_s=1.0, poll_s=0.1)
        assert time.monotonic() - start < 10
        assert lock.exists()  # a live builder's lock is never taken away
    finally:
        holder.kill()
        holder.wait()
    # once its holder is gone, the same file is stale
    assert lock_holders(lock) == []
    assert clear_stale_lock(lock, wait_s=1.0, poll_s=0.1) == "removed"
    assert not lock.exists()


def test_lock_released_while_waiting(tmp_path, capsys):
    lock = tmp_path / "lock"
    holder = _hold_open(lock)
    subprocess.Popen([sys.executable, "-c", f"import time, os; time.sleep(1); os.unlink({str(lock)!r})"])
    try:
        assert clear_stale_lock(lock, wait_s=30, poll_s=0.1) == "released"
    finally:
        holder.kill()
        holder.wait()
    assert f"waiting for process {holder.pid}" in capsys.readouterr().err


def test_no_lock_is_nothing(tmp_path):
    assert clear_stale_lock(tmp_path / "lock") == "none"
