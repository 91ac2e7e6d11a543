"""The OpenMP wait policy of child processes that load NNCF.

torch and NNCF's compiled extension each load an OpenMP runtime. With the default
policy their worker threads spin for a while after every parallel region; two runtimes
doing that on a 2-core machine starve each other (an NNCF forward went from 0.1 s to
6 s). ``OMP_WAIT_POLICY=PASSIVE`` fixes it, but makes plain torch training about 2x
slower (0.26 -> 0.56 s per step for the default model), so only NNCF processes get it.
The policy is read when the runtime loads, i.e. at ``import torch``, so it can only be
set for a new process.
"""
from __future__ import annotations

import os

NNCF_POLICY = "PASSIVE"


def nncf_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that loads NNCF; a user's own choice is kept."""
    env = dict(os.environ if base is None else base)
    env.setdefault("OMP_WAIT_POLICY", NNCF_POLICY)
    return env


def policy_is_passive() -> bool:
    """Whether this process was started with passive OpenMP waiting."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == NNCF_POLICY
