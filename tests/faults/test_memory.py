"""faults.md#fault-7: a worker that grows past max_memory_per_worker is recycled between tasks."""

from __future__ import annotations

import psutil

import taskengine
from tests.faults.conftest import FAULTY, assert_responsive

Status = taskengine.TaskStatus
MB = 1024 * 1024


def test_worker_over_its_memory_limit_finishes_the_task_then_is_recycled(
    eng: taskengine.TaskEngine,
) -> None:
    eng.register_handler("probe", FAULTY, "action")
    probe = eng.wait(eng.create("probe", {"action": "pid"}), timeout=20).result
    baseline = psutil.Process(probe).memory_info().rss
    limit = baseline + 40 * MB  # never the host's memory: a 60 MB allocation crosses it
    eng.register_handler("leaky", FAULTY, "action", max_memory_per_worker=limit)

    leaky = eng.wait(eng.create("leaky", {"action": "leak", "bytes": 60 * MB}), timeout=20)
    assert leaky.status is Status.SUCCESS  # the task that crossed the line completes normally
    assert leaky.attempts == 1
    after = eng.wait(eng.create("leaky", {"action": "pid"}), timeout=20)
    assert after.status is Status.SUCCESS
    assert after.result != leaky.result  # the next task ran in a new worker

    small = eng.wait(eng.create("leaky", {"action": "leak", "bytes": 1 * MB}), timeout=20)
    again = eng.wait(eng.create("leaky", {"action": "pid"}), timeout=20)
    assert again.result == small.result  # under the limit: the worker is kept
    assert_responsive(eng)
