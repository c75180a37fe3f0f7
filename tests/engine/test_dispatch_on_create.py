"""A create that finds an idle worker dispatches on the creating thread (``Reactor.wake_for``).

The loop's own duties must survive that shortcut: every test here raises the loop's periodic
store poll and longest sleep to ten minutes, so that what it asserts within its limits can only
happen because the creating thread woke the loop when it had to (a deadline, a later due time,
a worker to start, a task to hand back).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import taskengine
from taskengine import TaskStatus
from taskengine.coordinator import reactor
from taskengine.pool import supervisor
from tests.conftest import until
from tests.integration.support import max_overlap

BASIC = "tests.handlers.basic"
PROBES = "tests.handlers.probes"
NEVER = 600.0


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[taskengine.TaskEngine]:
    monkeypatch.setattr(reactor, "POLL_INTERVAL", NEVER)
    monkeypatch.setattr(reactor, "MAX_SLEEP", NEVER)
    started = taskengine.TaskEngine(taskengine.MemoryStore(), max_total_workers=2).start()
    yield started
    started.stop(timeout=10)


def _loop_asleep(engine: taskengine.TaskEngine) -> bool:
    """Whether the reactor sleeps in select with its turn lock free (what the shortcut needs)."""
    loop = engine._reactor
    assert isinstance(loop, reactor.Reactor)
    return loop._armed_at is not None and not loop._turn_lock.locked()


def _warm_pool(
    engine: taskengine.TaskEngine,
    task_type: str,
    handler: tuple[str, str],
    payload: Any,
    **options: Any,
) -> None:
    """Register a pool that never idles out, finish one task on it (its worker is idle now),
    then wait for the loop to sleep."""
    module, method = handler
    engine.register_handler(task_type, module, method, idle_shutdown_timeout=None, **options)
    engine.wait(engine.create(task_type, payload), timeout=30)
    until(lambda: _loop_asleep(engine))


def test_a_create_hands_its_task_to_an_idle_worker_before_it_returns(
    engine: taskengine.TaskEngine,
) -> None:
    _warm_pool(engine, "pid", (BASIC, "pid"), None)
    for _ in range(20):
        task_id = engine.create("pid", None, retain_for=None)
        stored = engine.get(task_id)
        assert stored is not None
        # Claimed on this thread: never left pending for the reactor thread to find.
        assert stored.status is not TaskStatus.PENDING, stored
        assert engine.wait(task_id, timeout=30).status is TaskStatus.SUCCESS
        until(lambda: _loop_asleep(engine))


def test_the_execution_timeout_of_an_attempt_sent_by_a_create_still_fires(
    engine: taskengine.TaskEngine,
) -> None:
    _warm_pool(engine, "slow", (BASIC, "sleep"), {"seconds": 0}, execution_timeout=0.5)
    task_id = engine.create("slow", {"seconds": 60}, retry_count=0, retain_for=None)
    done = engine.wait(task_id, timeout=30)
    assert done.status is TaskStatus.FAILED
    assert done.error is not None
    assert "execution_timeout" in done.error.message


def test_a_task_due_later_runs_when_due_although_the_create_found_nothing_to_claim(
    engine: taskengine.TaskEngine,
) -> None:
    _warm_pool(engine, "at", (PROBES, "started_at"), None)
    due = datetime.now(UTC) + timedelta(seconds=0.5)
    task_id = engine.create("at", None, run_at=due)
    done = engine.wait(task_id, timeout=30)
    assert done.status is TaskStatus.SUCCESS
    assert done.result[1] >= due.timestamp() - 0.002  # ms-truncated due time


def test_work_beyond_the_idle_worker_gets_a_new_worker_from_the_loop(
    engine: taskengine.TaskEngine,
) -> None:
    # Attempts this long keep the prefetch depth at 1: the second task needs a second worker.
    _warm_pool(engine, "iv", (PROBES, "interval"), {"seconds": 0.05}, max_worker_count=2)
    ids = engine.create_many("iv", [{"seconds": 1.0}] * 2)
    results = [engine.wait(task_id, timeout=30).result for task_id in ids]
    assert len({pid for pid, _, _ in results}) == 2
    assert max_overlap((start, end) for _, start, end in results) == 2


def _failing_once_on(
    monkeypatch: pytest.MonkeyPatch, thread: threading.Thread, error: BaseException
) -> list[int]:
    """Make ``Supervisor.run_on`` raise ``error`` once when ``thread`` calls it; count calls."""
    original: Callable[..., None] = supervisor.Supervisor.run_on
    raised: list[int] = []

    def run_on(self: supervisor.Supervisor, *args: Any) -> None:
        if threading.current_thread() is thread and not raised:
            raised.append(1)
            raise error
        original(self, *args)

    monkeypatch.setattr(supervisor.Supervisor, "run_on", run_on)
    return raised


def test_a_create_interrupted_after_its_claim_leaves_no_task_stranded(
    engine: taskengine.TaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _warm_pool(engine, "pid", (BASIC, "pid"), None)
    raised = _failing_once_on(monkeypatch, threading.current_thread(), KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        engine.create("pid", None, retain_for=None)
    assert raised == [1]
    # Claimed by the interrupted dispatch and sent nowhere: the loop hands it back and runs it.
    (task,) = engine.query(task_type="pid").entities
    done = engine.wait(task.id, timeout=30)
    assert done.status is TaskStatus.SUCCESS
    assert done.attempts == 1


def test_a_failure_of_the_shortcut_is_logged_and_the_loop_runs_the_task(
    engine: taskengine.TaskEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _warm_pool(engine, "pid", (BASIC, "pid"), None)
    raised = _failing_once_on(monkeypatch, threading.current_thread(), RuntimeError("boom"))
    with caplog.at_level(logging.ERROR, logger="taskengine.coordinator.reactor"):
        task_id = engine.create("pid", None, retain_for=None)
    assert raised == [1]
    done = engine.wait(task_id, timeout=30)
    assert done.status is TaskStatus.SUCCESS
    assert done.attempts == 1
    assert any("creating thread failed" in record.getMessage() for record in caplog.records)
