"""``state_change_callback`` with real workers: sequences, process, order, errors, async."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import taskengine
from taskengine import TaskStatus
from tests.conftest import until

from .support import Gate

PROBES = "tests.handlers.probes"
P, Q, S, F, C = (
    TaskStatus.PROCESSING,
    TaskStatus.PENDING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)


class Recorder:
    """A callback that records (pid, thread, task snapshot) of every call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[int, str, taskengine.BackgroundTask]] = []

    def __call__(self, task: taskengine.BackgroundTask) -> None:
        with self._lock:
            self.calls.append((os.getpid(), threading.current_thread().name, task))

    def tasks(self, task_id: str) -> list[taskengine.BackgroundTask]:
        with self._lock:
            return [task for _, _, task in self.calls if task.id == task_id]

    def statuses(self, task_id: str) -> list[TaskStatus]:
        return [task.status for task in self.tasks(task_id)]

    def wait_for(self, task_id: str, count: int) -> list[TaskStatus]:
        until(lambda: len(self.statuses(task_id)) >= count, timeout=20)
        return self.statuses(task_id)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def _log(tmp_path: Path, name: str = "attempts") -> str:
    return str(tmp_path / f"{name}.log")


def test_success_sequence_runs_in_the_coordinator_process(
    engine: taskengine.TaskEngine, recorder: Recorder
) -> None:
    engine.register_handler("cb", "tests.handlers.basic", "echo", recorder)
    task_id = engine.create("cb", "hello")
    engine.wait(task_id, timeout=20)
    assert recorder.wait_for(task_id, 2) == [P, S]
    assert {pid for pid, _, _ in recorder.calls} == {os.getpid()}
    assert {name for _, name, _ in recorder.calls} == {"taskengine-callbacks"}
    processing, success = recorder.tasks(task_id)
    assert processing.attempts == 1
    assert success.result == "hello"


def test_retry_then_success_sequence(
    engine: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    engine.register_handler("cb", PROBES, "attempt_log", recorder)
    task_id = engine.create("cb", {"log": _log(tmp_path), "fails": 1}, retry_interval=0)
    engine.wait(task_id, timeout=20)
    assert recorder.wait_for(task_id, 4) == [P, Q, P, S]
    snapshots = recorder.tasks(task_id)
    assert [t.attempts for t in snapshots] == [1, 1, 2, 2]
    assert snapshots[1].error is not None
    assert snapshots[1].error.type == "ValueError"
    assert snapshots[3].error is None


def test_failure_after_retries_sequence(
    engine: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    engine.register_handler("cb", PROBES, "attempt_log", recorder)
    task_id = engine.create(
        "cb", {"log": _log(tmp_path), "fails": 99}, retry_count=2, retry_interval=0
    )
    assert engine.wait(task_id, timeout=20).status is F
    assert recorder.wait_for(task_id, 6) == [P, Q, P, Q, P, F]
    assert [t.retries_remaining for t in recorder.tasks(task_id)] == [2, 1, 1, 0, 0, 0]


def test_cancel_sequences(
    engine: taskengine.TaskEngine, recorder: Recorder, make_gate: Callable[[str], Gate]
) -> None:
    engine.register_handler("cb", PROBES, "gated", recorder)
    later = engine.create("cb", {}, run_at=datetime.now(UTC) + timedelta(seconds=60))
    assert engine.cancel(later)
    assert recorder.wait_for(later, 1) == [C]
    gate = make_gate("cancel")
    running = engine.create("cb", gate.payload())
    gate.wait_started()
    assert engine.cancel(running, terminate=True)
    assert engine.wait(running, timeout=20).status is C
    assert recorder.wait_for(running, 2) == [P, C]


def test_callbacks_arrive_in_order_for_each_of_50_concurrent_tasks(
    engine: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    engine.register_handler("cb", PROBES, "attempt_log", recorder, max_worker_count=2)
    ids = [
        engine.create("cb", {"log": _log(tmp_path, str(n)), "fails": 1}, retry_interval=0)
        for n in range(50)
    ]
    for task_id in ids:
        assert engine.wait(task_id, timeout=60).status is S
    until(lambda: len(recorder.calls) >= 200, timeout=20)
    assert len(recorder.calls) == 200
    for task_id in ids:
        assert recorder.statuses(task_id) == [P, Q, P, S], task_id
        assert [t.attempts for t in recorder.tasks(task_id)] == [1, 1, 2, 2]
    assert {pid for pid, _, _ in recorder.calls} == {os.getpid()}


def test_an_exception_in_a_callback_is_logged_and_never_stalls(
    engine: taskengine.TaskEngine, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(task: taskengine.BackgroundTask) -> None:
        recorder(task)
        raise RuntimeError("callback bug")

    engine.register_handler("boom", "tests.handlers.basic", "echo", explode)
    engine.register_handler("calm", "tests.handlers.basic", "echo", recorder)
    with caplog.at_level(logging.ERROR, logger="taskengine"):
        boom = [engine.create("boom", n) for n in range(5)]
        assert [engine.wait(t, timeout=20).result for t in boom] == list(range(5))
        calm = engine.create("calm", "after")
        assert engine.wait(calm, timeout=20).result == "after"
        assert recorder.wait_for(calm, 2) == [P, S]
    for task_id in boom:
        assert recorder.statuses(task_id) == [P, S]
    failures = [r for r in caplog.records if "state-change callback failed" in r.getMessage()]
    assert len(failures) == 10
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in failures)


def test_async_callback_is_awaited(
    engine: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    async def record(task: taskengine.BackgroundTask) -> None:
        await asyncio.sleep(0)
        recorder(task)

    engine.register_handler("acb", PROBES, "attempt_log", record)
    task_id = engine.create("acb", {"log": _log(tmp_path), "fails": 1}, retry_interval=0)
    engine.wait(task_id, timeout=20)
    assert recorder.wait_for(task_id, 4) == [P, Q, P, S]
    assert {pid for pid, _, _ in recorder.calls} == {os.getpid()}
