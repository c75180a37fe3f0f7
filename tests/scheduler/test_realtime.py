"""A few checks on the real clock (generous bounds) and the engine helper with a real engine."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest

from taskengine import (
    ScheduledTaskTime,
    TaskEngine,
    TaskScheduler,
    TaskStatus,
    TaskValidationError,
)
from tests.conftest import until, worker_pids


def test_real_time_slots_are_exact_and_fire_soon_after_they_are_due():
    fired: list[tuple[datetime, datetime]] = []
    done = threading.Event()

    def record(slot):
        fired.append((slot, datetime.now(UTC)))
        if len(fired) == 5:
            done.set()

    with TaskScheduler() as scheduler:
        scheduler.add_task("rt", ScheduledTaskTime(interval_seconds=0.2), record)
        assert done.wait(30)
    slots = [slot for slot, _ in fired[:5]]
    # On the phase of the first slot, never twice (a stall of the machine may collapse a slot;
    # that every slot fires is shown on the fake clock).
    assert slots == sorted(set(slots))
    assert all((slot - slots[0]) % timedelta(seconds=0.2) == timedelta(0) for slot in slots)
    for slot, when in fired[:5]:
        # Never early; late by far less than a second even on a loaded machine.  The
        # precision itself (p50/p99) is measured in benchmarks/scheduler_precision.py.
        assert timedelta(0) <= when - slot < timedelta(seconds=2)


def test_scheduled_engine_tasks_run_in_the_worker_pools():
    with TaskEngine() as engine, TaskScheduler(engine) as scheduler:
        engine.register_handler("report", "tests.handlers.basic", "pid")
        callback = TaskScheduler.create_task_callback(
            engine, "report", {"kind": "daily"}, retain_for=None
        )
        scheduler.add_task("report", ScheduledTaskTime(interval_seconds=0.2), callback)

        def finished():
            page = engine.query(task_type="report", status=TaskStatus.SUCCESS)
            return page.entities if len(page.entities) >= 3 else None

        tasks = until(finished, timeout=60)
        scheduler.remove_task("report")
    assert all(task.result != os.getpid() and isinstance(task.result, int) for task in tasks)
    assert all(task.retain_for is None for task in tasks)
    until(lambda: not worker_pids(), timeout=10)


def test_create_task_callback_checks_its_arguments():
    engine = TaskEngine()
    try:
        with pytest.raises(TaskValidationError, match="engine"):
            TaskScheduler.create_task_callback(object(), "report")
        with pytest.raises(TaskValidationError, match="task_type"):
            TaskScheduler.create_task_callback(engine, "")
        with pytest.raises(TaskValidationError, match="options"):
            TaskScheduler.create_task_callback(engine, "report", None, retries=3)
        callback = TaskScheduler.create_task_callback(engine, "report", [1], retry_count=0)
        task = engine.get(callback())
        assert task is not None
        assert task.type == "report"
        assert task.status == TaskStatus.PENDING
    finally:
        engine.stop()


def test_schedules_and_tasks_share_one_sqlite_file(tmp_path):
    """The schedule store writes the same file as the engine's writer, on its own connection."""
    import sqlite3

    from taskengine import SqliteStore

    path = tmp_path / "tasks.db"
    with TaskEngine(SqliteStore(path)) as engine, TaskScheduler(engine) as scheduler:
        engine.register_handler("report", "tests.handlers.basic", "echo")
        callback = TaskScheduler.create_task_callback(engine, "report", "hi", retain_for=None)
        scheduler.add_task("report", ScheduledTaskTime(interval_seconds=0.1), callback)
        until(
            lambda: len(engine.query(task_type="report", status=TaskStatus.SUCCESS).entities) >= 5,
            timeout=60,
        )
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM schedules WHERE id = 'report'").fetchone()
    conn.close()
    assert count == 1
    until(lambda: not worker_pids(), timeout=10)
