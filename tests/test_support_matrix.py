"""Every (task, target) pair is either tested end to end or listed as unsupported with
its reason: a new task or target cannot land untested by accident."""
from __future__ import annotations

import importlib

import pytest

from converters.registry import TARGETS
from hrnet_edge.config import TASKS
from hrnet_edge.tasks import registered_tasks

# where each task's rows (every target x precision) are asserted
TESTED_BY = {"pose": "test_pipeline", "seg": "test_pipeline_tasks", "cls": "test_pipeline_tasks",
             "det": "test_pipeline_det"}
UNSUPPORTED: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_pair_is_tested_or_listed(task, target):
    if (task, target) in UNSUPPORTED:
        assert UNSUPPORTED[(task, target)].strip(), "an unsupported pair needs its reason"
        assert task not in registered_tasks(), f"{task} has a task now: test it and drop the entry"
        return
    assert task in TESTED_BY, f"({task}, {target}) is neither tested nor listed as unsupported"
    module = importlib.import_module(TESTED_BY[task])
    rows = module.ALL_ROWS
    precisions = {p for t, p in rows if t == target}
    from converters.base import UINT8_INPUT
    from converters.registry import get_target

    # the uint8-input INT8 variants are exported only when named: tested per target in
    # test_uint8_input and through export + check in test_pipeline
    offered = set(get_target(target).precisions)
    if UINT8_INPUT in offered:
        import test_uint8_input

        assert target in test_uint8_input.TARGETS
    assert precisions == offered - {UINT8_INPUT}, (task, target, precisions)


def test_every_registered_task_is_in_the_matrix():
    assert set(registered_tasks()) == set(TESTED_BY)
