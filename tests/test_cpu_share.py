"""Check processes share the CPU but time their artifacts alone (hrnet_edge.pipeline.cpu_share)."""
from __future__ import annotations

import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hrnet_edge.pipeline import cpu_share

pytestmark = pytest.mark.skipif(cpu_share.fcntl is None, reason="flock needs POSIX")

# A fake check process, started the way the stage starts one (run_child): it notes when
# it began, works (ticking into its log), "times" something under alone() (noting the
# window), works again, and at exit spends a while in teardown (still ticking).
WORKER = textwrap.dedent("""
    import atexit, sys, time
    born = time.time()
    from hrnet_edge.pipeline import cpu_share
    name, lock_dir, log = sys.argv[1], sys.argv[2], open(sys.argv[3], "w", buffering=1)
    log.write(f"tick {born:.6f}\\n")

    def work(seconds):
        end = time.time() + seconds
        while time.time() < end:
            log.write(f"tick {time.time():.6f}\\n")
            time.sleep(0.005)

    atexit.register(work, 0.3)  # teardown after the last line, before the process is gone
    cpu_share.hold_for_life(lock_dir)
    work(0.4)
    with cpu_share.alone():
        log.write(f"alone {time.time():.6f}\\n")
        time.sleep(0.4)
        log.write(f"alone-end {time.time():.6f}\\n")
    work(0.4)
""")


def _read(path: Path):
    ticks, windows, start = [], [], None
    for line in path.read_text().splitlines():
        kind, t = line.split()
        if kind == "tick":
            ticks.append(float(t))
        elif kind == "alone":
            start = float(t)
        else:
            windows.append((start, float(t)))
    return ticks, windows


def test_no_other_check_starts_works_or_exits_while_one_times_its_artifact(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    checks = tmp_path / "checks"
    names = "abcd"
    logs = {n: tmp_path / f"{n}.log" for n in names}
    with ThreadPoolExecutor(max_workers=2) as pool:  # as the stage: two at a time
        procs = list(pool.map(lambda n: cpu_share.run_child(checks, [sys.executable, str(script), n,
                                                                      str(checks), str(logs[n])]), names))
    assert [p.returncode for p in procs] == [0] * len(names), [p.stderr for p in procs]
    seen = {n: _read(logs[n]) for n in names}
    for n, (_ticks, windows) in seen.items():
        assert len(windows) == 1
        lo, hi = windows[0]
        for other, (ticks, _w) in seen.items():
            if other != n:
                inside = [t for t in ticks if lo < t < hi]
                assert not inside, f"{other} ran {len(inside)} times while {n} was timing"
    # outside the timed windows they did share the CPU: a's and b's work overlapped
    (ta, _), (tb, _) = seen["a"], seen["b"]
    assert min(ta) < max(tb) and min(tb) < max(ta)
    assert (checks / cpu_share.LOCK_NAME).is_file()


def test_a_child_that_dies_before_its_lock_does_not_hang_the_stage(tmp_path):
    done = cpu_share.run_child(tmp_path, [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert done.returncode == 3


def test_alone_outside_a_check_process_is_a_no_op(monkeypatch):
    with cpu_share.alone():  # no lock held: must not block or fail
        pass
    monkeypatch.setenv(cpu_share.ENV, "1")
    assert cpu_share.parallel_checks() == 1
