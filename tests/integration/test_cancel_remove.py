"""``cancel`` and ``remove`` against real workers (contract.md#engine and #transitions)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import taskengine
from taskengine import TaskStatus
from tests.conftest import until, worker_pids

from .support import Gate, is_alive, present

PROBES = "tests.handlers.probes"
BASIC = "tests.handlers.basic"


def test_a_cancelled_pending_task_never_runs(engine: taskengine.TaskEngine, tmp_path: Path) -> None:
    engine.register_handler("bump", BASIC, "bump")
    soon = datetime.now(UTC) + timedelta(seconds=0.3)
    cancelled_counter = tmp_path / "cancelled"
    cancelled = engine.create("bump", str(cancelled_counter), run_at=soon, retain_for=None)
    assert engine.cancel(cancelled) is True
    # A sentinel due just after the cancelled task's run_at: once it ran, the dispatcher has
    # passed the cancelled task's due time.
    sentinel = engine.create(
        "bump", str(tmp_path / "sentinel"), run_at=soon + timedelta(seconds=0.1)
    )
    assert engine.wait(sentinel, timeout=20).result == 1
    assert not cancelled_counter.exists()
    final = engine.wait(cancelled, timeout=5)
    assert final.status is TaskStatus.CANCELLED
    assert final.attempts == 0
    assert final.date_cancelled is not None
    assert engine.cancel(cancelled) is False


def test_cancel_without_terminate_leaves_a_processing_task_running(
    engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    engine.register_handler("gated", PROBES, "gated")
    gate = make_gate("keep")
    task_id = engine.create("gated", gate.payload(value="done"))
    pid = gate.wait_started()
    assert engine.cancel(task_id) is False
    assert present(engine.get(task_id)).status is TaskStatus.PROCESSING
    gate.open()
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.result == ("done", pid)


def test_cancel_with_terminate_kills_and_replaces_the_worker(
    engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    engine.register_handler("gated", PROBES, "gated")
    gate = make_gate("terminate")
    task_id = engine.create("gated", gate.payload(), retain_for=None)
    pid = gate.wait_started()
    assert engine.cancel(task_id, terminate=True) is True
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.CANCELLED
    assert final.result is None
    until(lambda: not is_alive(pid), timeout=10)
    # The late death of the worker is never written over the cancellation.
    stored = engine.get(task_id)
    assert stored is not None
    assert stored.status is TaskStatus.CANCELLED
    assert stored.attempts == 1
    gate.open()
    after = engine.wait(engine.create("gated", gate.payload(value="next")), timeout=20)
    assert after.status is TaskStatus.SUCCESS
    assert after.result[0] == "next"
    assert after.result[1] != pid


def test_cancel_answers_false_for_finished_and_unknown_tasks(
    engine: taskengine.TaskEngine,
) -> None:
    engine.register_handler("echo", BASIC, "echo")
    done = engine.create("echo", 1, retain_for=None)
    assert engine.wait(done, timeout=20).status is TaskStatus.SUCCESS
    assert engine.cancel(done) is False
    assert engine.cancel(done, terminate=True) is False
    assert present(engine.get(done)).status is TaskStatus.SUCCESS
    assert engine.cancel("f" * 32) is False


def test_remove_a_pending_task(engine: taskengine.TaskEngine) -> None:
    task_id = engine.create("unhandled", "payload")
    assert engine.remove(task_id) is True
    assert engine.get(task_id) is None
    assert engine.remove(task_id) is False
    engine.register_handler("unhandled", BASIC, "echo")
    # Nothing left to run: a new task of the type is the only one that runs.
    other = engine.create("unhandled", "other", retain_for=None)
    assert engine.wait(other, timeout=20).result == "other"
    assert [t.id for t in engine.query("unhandled").entities] == [other]


def test_remove_a_processing_task_terminates_it_and_never_writes_it_back(
    engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    statuses: list[TaskStatus] = []
    engine.register_handler("gated", PROBES, "gated", lambda task: statuses.append(task.status))
    gate = make_gate("remove")
    task_id = engine.create("gated", gate.payload(), retain_for=None)
    pid = gate.wait_started()
    assert engine.remove(task_id) is True
    until(lambda: not is_alive(pid), timeout=10)
    assert engine.get(task_id) is None
    assert engine.store.get(task_id) is None
    # The pool replaced the worker and keeps working; the removed task never came back.
    gate.open()
    after = engine.wait(engine.create("gated", gate.payload(value="after")), timeout=20)
    assert after.result[0] == "after"
    assert engine.get(task_id) is None
    until(lambda: len(statuses) >= 3, timeout=10)
    assert statuses == [TaskStatus.PROCESSING, TaskStatus.PROCESSING, TaskStatus.SUCCESS]
    assert pid not in worker_pids()


def test_remove_a_finished_task(engine: taskengine.TaskEngine) -> None:
    engine.register_handler("echo", BASIC, "echo")
    task_id = engine.create("echo", 1, retain_for=None)
    engine.wait(task_id, timeout=20)
    assert engine.remove(task_id) is True
    assert engine.get(task_id) is None
    assert engine.remove(task_id) is False
    assert engine.remove("a" * 32) is False
