"""``wait`` with real workers: snapshots, timeouts, unknown, removed tasks (contract.md#engine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import taskengine
from taskengine import TaskStatus
from tests.conftest import until

from .support import Gate

PROBES = "tests.handlers.probes"
BASIC = "tests.handlers.basic"


def test_wait_returns_the_final_snapshot(memory_engine: taskengine.TaskEngine) -> None:
    memory_engine.register_handler("add", BASIC, "add")
    task_id = memory_engine.create("add", {"a": 2, "b": 3}, retain_for=None)
    final = memory_engine.wait(task_id, timeout=20)
    assert final.id == task_id
    assert final.status is TaskStatus.SUCCESS
    assert final.result == 5
    assert final.attempts == 1
    assert final.date_completed is not None
    assert final.node_identity == memory_engine.node_identity
    assert memory_engine.get(task_id) == final
    # Waiting on a task that has finished already returns at once.
    assert memory_engine.wait(task_id, timeout=0) == final


def test_wait_raises_timeout_error_and_the_task_goes_on(
    memory_engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    memory_engine.register_handler("gated", PROBES, "gated")
    gate = make_gate("timeout")
    task_id = memory_engine.create("gated", gate.payload(value="late"))
    gate.wait_started()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        memory_engine.wait(task_id, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    gate.open()
    assert memory_engine.wait(task_id, timeout=20).result[0] == "late"


def test_wait_on_an_unknown_id_raises_task_not_found(
    memory_engine: taskengine.TaskEngine,
) -> None:
    with pytest.raises(taskengine.TaskNotFoundError) as caught:
        memory_engine.wait("0123456789abcdef0123456789abcdef", timeout=1)
    assert isinstance(caught.value, LookupError)
    with pytest.raises(taskengine.TaskValidationError):
        memory_engine.wait(12345)  # type: ignore[arg-type]


def test_a_waiter_on_a_task_removed_meanwhile_gets_task_not_found(
    memory_engine: taskengine.TaskEngine,
) -> None:
    task_id = memory_engine.create("no-handler-yet")
    outcome: list[object] = []

    def waiter() -> None:
        try:
            outcome.append(memory_engine.wait(task_id, timeout=20))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    # Remove only once the waiter is blocked on the task (white box: its subscription).
    until(lambda: task_id in memory_engine._publisher._waiters, timeout=10)
    assert memory_engine.remove(task_id) is True
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], taskengine.TaskNotFoundError)


def test_several_waiters_on_one_task_all_get_the_snapshot(
    memory_engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    memory_engine.register_handler("gated", PROBES, "gated")
    gate = make_gate("many")
    task_id = memory_engine.create("gated", gate.payload(value="shared"))
    results: list[taskengine.BackgroundTask] = []
    lock = threading.Lock()

    def waiter() -> None:
        task = memory_engine.wait(task_id, timeout=20)
        with lock:
            results.append(task)

    threads = [threading.Thread(target=waiter) for _ in range(5)]
    for thread in threads:
        thread.start()
    until(lambda: len(memory_engine._publisher._waiters.get(task_id, ())) == 5, timeout=10)
    gate.open()
    for thread in threads:
        thread.join(20)
    assert len(results) == 5
    assert all(task.result[0] == "shared" for task in results)
    assert all(task.status is TaskStatus.SUCCESS for task in results)
