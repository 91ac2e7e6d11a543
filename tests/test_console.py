"""Third-party output goes to the run log; the project's lines reach the terminal."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import os, subprocess, sys, warnings
    from pathlib import Path
    from hrnet_edge.console import chatter_to, child_console, say

    log = Path(sys.argv[1])
    with chatter_to(log) as path:
        assert path == log
        print("python print from a library")
        print("python stderr from a library", file=sys.stderr)
        warnings.warn("a library warning")
        os.write(1, b"C++ stdout line\\n")
        os.write(2, b"C++ stderr line\\n")
        say("[mine] project line")
        env, fds = child_console()
        code = ("import os; from hrnet_edge.console import say; "
                "say('[child] project line'); os.write(1, b'child C++ line\\\\n'); print('child library print')")
        subprocess.run([sys.executable, "-c", code], env=env, pass_fds=fds, check=True)
    print("after the block")
    with chatter_to(log, enabled=False) as path:  # --verbose
        assert path is None
        print("verbose library line")
''')


def test_chatter_goes_to_the_log_and_project_lines_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "run.log"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    terminal = proc.stdout + proc.stderr
    for line in ("[mine] project line", "[child] project line", "after the block", "verbose library line"):
        assert line in terminal, terminal
    text = log.read_text()
    for line in ("python print from a library", "python stderr from a library", "a library warning",
                 "C++ stdout line", "C++ stderr line", "child C++ line", "child library print"):
        assert line not in terminal, terminal
        assert line in text, text
    # the log keeps the project's lines too, in order with the rest
    assert text.index("C++ stderr line") < text.index("[mine] project line") < text.index("child C++ line")


STDERR_CHILD = textwrap.dedent('''
    import os, subprocess, sys
    from pathlib import Path
    from hrnet_edge.console import ENV_FD, STDERR_IS_TERMINAL, chatter_to, child_console, say

    log = Path(sys.argv[1])
    with chatter_to(log):
        env, fds = child_console()
        env[ENV_FD] = STDERR_IS_TERMINAL  # as for torchrun, which passes no other descriptor
        code = ("import os, sys, warnings; from hrnet_edge.console import attach, say, bar_stream; attach(); "
                "warnings.warn('child library warning'); os.write(2, b'child C++ stderr\\\\n'); "
                "say('[child] project line'); print('child bar', file=bar_stream(), flush=True)")
        subprocess.run([sys.executable, "-c", code], env=env, stderr=fds[0], check=True)
        say("[parent] after the child")
''')


def test_a_child_given_the_terminal_as_stderr_keeps_its_chatter_in_the_log(tmp_path):
    """torchrun's processes get no descriptor but 0-2: inside a redirected run they get the
    log as stdout and the terminal as stderr, and attach() swaps them back."""
    log = tmp_path / "logs" / "run.log"
    proc = subprocess.run([sys.executable, "-c", STDERR_CHILD, str(log)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    terminal = proc.stdout + proc.stderr
    for line in ("[child] project line", "child bar", "[parent] after the child"):
        assert line in terminal, terminal
    text = log.read_text()
    for line in ("child library warning", "child C++ stderr"):
        assert line not in terminal, terminal
        assert line in text, text
    assert text.index("child C++ stderr") < text.index("[child] project line") < text.index("[parent] after")
