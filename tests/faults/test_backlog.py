"""faults.md#fault-21: a large backlog of a type nobody handles does not slow a registered type."""

from __future__ import annotations

import time

import taskengine
from tests.faults.conftest import BASIC, count_tasks

Status = taskengine.TaskStatus


def _run_batch(engine: taskengine.TaskEngine, base: int) -> float:
    started = time.monotonic()
    values = list(range(base, base + 50))
    ids = engine.create_many("busy", values, retry_count=0)
    finals = [engine.wait(task_id, timeout=30) for task_id in ids]
    assert all(task.status is Status.SUCCESS for task in finals)
    assert [task.result for task in finals] == values
    return time.monotonic() - started


def test_unhandled_backlog_does_not_stall_a_registered_type(
    engine: taskengine.TaskEngine,
) -> None:
    engine.register_handler("busy", BASIC, "echo")
    baseline = _run_batch(engine, 0)  # includes the worker's start-up
    orphans = engine.create_many("orphan", [{"n": i} for i in range(10_000)])
    assert len(orphans) == 10_000
    with_backlog = _run_batch(engine, 100)
    assert with_backlog < max(3 * baseline, baseline + 2.0), (baseline, with_backlog)
    # The unhandled tasks were never touched, and paging walks through all of them.
    assert count_tasks(engine, task_type="orphan", status="processing") == 0
    assert count_tasks(engine, task_type="orphan", status="pending") == 10_000
    first = engine.get(orphans[0])
    assert first is not None
    assert first.attempts == 0
    assert first.node_identity is None
