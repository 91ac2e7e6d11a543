"""The contract every built-in dataset generator keeps, written once.

A generated dataset folder carries ``generator.json`` (the parameters it was drawn
with, written last: its presence marks a complete dataset). The same parameters reuse
the folder; later stages (``reuse_only``) refuse a missing or different one rather than
regenerate it; a folder some other tool or generator wrote is never replaced. The data
is built in a temporary folder beside ``root`` and renamed into place, so an
interrupted run never leaves something that looks complete.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from hrnet_edge.errors import DataError


def _existing_params(root: Path) -> dict | None:
    try:
        data = json.loads((root / "generator.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def reuse_or_build(root: Path, params: dict, build: Callable[[Path], None], reuse_only: bool,
                   what: str) -> bool:
    """Reuse the dataset in ``root`` if it was drawn with ``params``, else build it.

    Args:
        root: the dataset folder.
        params: the generator's parameters; ``params["generator"]`` names the generator.
        build: writes the dataset (without generator.json) into the folder it is given.
        reuse_only: never (re)generate; a missing or different dataset is a DataError.
        what: the generator's name in messages, e.g. ``"synthetic segmentation"``.

    Returns:
        True when the existing dataset was reused.

    Raises:
        DataError: ``root`` is not a folder, holds something this generator did not
            write, or (``reuse_only``) is missing or was drawn differently.
    """
    root = Path(root)
    if root.exists():
        if not root.is_dir():
            raise DataError(f"{root} exists and is not a folder; choose an empty or new folder")
        existing = _existing_params(root)
        if existing == params:
            return True
        ours = existing is not None and existing.get("generator", params["generator"]) == params["generator"]
        if reuse_only and ours:
            changed = sorted(k for k in params if existing.get(k) != params[k])
            raise DataError(f"the synthetic dataset in {root} was made with different "
                            f"{', '.join(changed)} ({', '.join(f'{k}={existing.get(k)!r}' for k in changed)}) "
                            f"than this code and configuration would make now "
                            f"({', '.join(f'{k}={params[k]!r}' for k in changed)}); later stages "
                            f"never regenerate it: start a new run directory to retrain")
        if not ours and any(root.iterdir()):
            raise DataError(f"{root} exists and was not written by the {what} generator "
                            f"(no matching generator.json); choose an empty or new folder")
    if reuse_only:
        raise DataError(f"the run's synthetic dataset is missing from {root}; run the train "
                        f"stage first (it generates the dataset)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp", dir=root.parent))
    try:
        build(tmp)
        (tmp / "generator.json").write_text(json.dumps(params, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return False


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> list[Any]:
    """``[fn(job) for job in jobs]``, in ``workers`` processes when there is more than one
    of each (each job draws from its own seed, so the output does not depend on it).

    The processes are spawned, not forked: a fork copies the locks that other threads of
    the caller hold (a test runner's, a server's, the pool's own feeder), and a child then
    waited forever on one of them."""
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(fn, jobs))
    return [fn(job) for job in jobs]
