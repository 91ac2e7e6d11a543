"""Check processes share the CPU but time their artifacts alone (hrnet_edge.pipeline.cpu_share)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hrnet_edge.pipeline import cpu_share

pytestmark = pytest.mark.skipif(cpu_share.fcntl is None, reason="flock needs POSIX")

# One fake check process: works (ticking into its log) for a while, takes the exclusive
# lock to "time" something (recording the window), then works again.
WORKER = textwrap.dedent("""
    import sys, time
    from hrnet_edge.pipeline import cpu_share
    name, lock_dir, log = sys.argv[1], sys.argv[2], open(sys.argv[3], "w", buffering=1)

    def work(seconds):
        end = time.time() + seconds
        while time.time() < end:
            log.write(f"tick {time.time():.6f}\\n")
            time.sleep(0.005)

    with cpu_share.working(lock_dir):
        work(0.6)
        with cpu_share.alone():
            log.write(f"alone {time.time():.6f}\\n")
            time.sleep(0.6)
            log.write(f"alone-end {time.time():.6f}\\n")
        work(0.6)
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


def test_no_other_check_works_while_one_times_its_artifact(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    logs = [tmp_path / f"{n}.log" for n in "ab"]
    procs = [subprocess.Popen([sys.executable, str(script), n, str(tmp_path / "checks"), str(log)])
             for n, log in zip("ab", logs)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    (ticks_a, alone_a), (ticks_b, alone_b) = _read(logs[0]), _read(logs[1])
    assert len(alone_a) == len(alone_b) == 1 and ticks_a and ticks_b
    for ticks, windows in ((ticks_b, alone_a), (ticks_a, alone_b)):
        for lo, hi in windows:
            inside = [t for t in ticks if lo < t < hi]
            assert not inside, f"the other process worked {len(inside)} times during a timed window"
    # and they did share the CPU otherwise: their working spans overlap
    assert min(ticks_a) < max(ticks_b) and min(ticks_b) < max(ticks_a)
    assert (tmp_path / "checks" / cpu_share.LOCK_NAME).is_file()


def test_alone_outside_a_check_process_is_a_no_op():
    with cpu_share.alone():  # no lock held: must not block or fail
        pass
    assert cpu_share.parallel_checks() in (1, 2)
