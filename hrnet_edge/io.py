"""Atomic file writes, hashing and small JSON helpers.

Writes go to a temporary name in the same folder and are renamed into place, so an
interrupted run never leaves a half-written file that a later stage takes for whole.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


PARTIAL_PREFIX = ".partial."
REPLACED = ".replaced"  # inside a staging folder: the folder it is replacing, moved aside
OWNER = ".partial-owner"  # inside a staging folder: "<pid> <start time>" of the writing process


def _process_token(pid: int) -> str | None:
    """The start time of a live process (None when it has exited or is a zombie): with
    the pid it names one process, not a later one that reuses the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc here: whether the pid exists is all that can be known
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    fields = stat[stat.rfind(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _owner_alive(staging: Path) -> bool:
    """Whether the process that made ``staging`` is still running (and may still write)."""
    try:
        pid, token = (staging / OWNER).read_text().split()
        return _process_token(int(pid)) == token
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    Works for files and for folders (e.g. a Core ML ``.mlpackage`` or a whole export
    folder). A folder being replaced is first moved into the staging folder, then the
    new one is renamed into place: a kill between the two renames leaves the old folder
    inside ``.partial.<name>.*``, where :func:`recover_partials` puts it back. On error
    the temporary is removed and ``path`` is left as it was.
    """
    from hrnet_edge.faults import kill_point

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{path.name}.", dir=path.parent))
    tmp = staging / path.name
    try:
        (staging / OWNER).write_text(f"{os.getpid()} {_process_token(os.getpid())}")
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        kill_point(f"write:{path.name}")
        if path.is_dir() and not path.is_symlink():
            os.replace(path, staging / REPLACED)
            kill_point(f"swap:{path.name}")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def recover_partials(folder: str | os.PathLike) -> list[str]:
    """Finish what an interrupted :func:`atomic_path` left in ``folder``: a folder moved
    aside and not replaced goes back in place; staging folders are removed. A staging
    folder whose writing process is still running is not a leftover (another command or
    worker is writing into the run) and stays as it is. Returns one line per thing done."""
    folder = Path(folder)
    done: list[str] = []
    if not folder.is_dir():
        return done
    for staging in sorted(folder.glob(f"{PARTIAL_PREFIX}*")):
        if not staging.is_dir() or _owner_alive(staging):
            continue
        name = staging.name[len(PARTIAL_PREFIX):].rsplit(".", 1)[0]
        old, target = staging / REPLACED, folder / name
        if old.is_dir() and not target.exists():
            os.replace(old, target)
            done.append(f"restored {target} (its replacement was interrupted)")
        shutil.rmtree(staging, ignore_errors=True)
        done.append(f"removed the unfinished {staging.name}")
    return done


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=jsonable) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a truncated or binary file is a CorruptFileError naming it."""
    from hrnet_edge.errors import CorruptFileError

    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} is damaged (not valid JSON: {_first_line(exc)}); "
                               "restore it, or delete it and re-run the stage that writes it") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, or of every file in a folder (sorted by relative path)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    """Size of a file, or the total of every file in a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def jsonable(obj: Any) -> Any:
    """``json.dumps`` default for arrays, paths and sets."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
