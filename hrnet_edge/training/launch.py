"""``python -m hrnet_edge.training.launch ARGS``: torchrun (``torch.distributed.run``
with ARGS) for ``train`` and ``qat`` in several processes.

torchrun's own messages and tracebacks (a signal it received, a process that failed)
go to its stdout, which inside a redirected run (``pipeline``) is the run's log, while
its processes keep its stderr (there: the terminal, see
:func:`hrnet_edge.console.attach`). An interrupt ends it, once its processes have
ended, with status 130 and no traceback.
"""
from __future__ import annotations

import sys

INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    sys.stderr = sys.stdout  # before torch's loggers bind to a stream; fd 2 stays for the processes
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(sys.argv[1:] if argv is None else argv)
    except (KeyboardInterrupt, SignalException):
        return INTERRUPTED
    except Exception as exc:  # a process failed: torchrun has reported which, and how
        print(f"torchrun: {type(exc).__name__}: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
