"""Retries, ``retry()``, ``run_at``, retention and idempotency keys, end to end.

The contract: contract.md#engine to #persistence.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import taskengine
from taskengine import TaskStatus
from tests.conftest import until

from .support import present

PROBES = "tests.handlers.probes"
BASIC = "tests.handlers.basic"


def _attempt_times(log: Path) -> list[tuple[int, float]]:
    pairs = (line.split() for line in log.read_text().splitlines())
    return [(int(attempt), float(stamp)) for attempt, stamp in pairs]


def test_retries_run_out_and_the_task_fails_with_the_last_error(
    engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    engine.register_handler("flaky", PROBES, "attempt_log")
    log = tmp_path / "attempts.log"
    task_id = engine.create(
        "flaky", {"log": str(log), "fails": 99}, retry_count=2, retry_interval=0, retain_for=None
    )
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.FAILED
    assert final.attempts == 3
    assert final.retries_remaining == 0
    assert final.date_completed is not None
    assert final.date_next_process is None
    assert final.error is not None
    assert final.error.type == "ValueError"
    assert f"planned failure of attempt 3 of {task_id}" in final.error.message
    assert [attempt for attempt, _ in _attempt_times(log)] == [1, 2, 3]
    stored = engine.get(task_id)
    assert stored is not None
    assert stored.status is TaskStatus.FAILED
    assert stored.error == final.error


def test_retry_interval_separates_attempts_and_the_error_is_kept_meanwhile(
    engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    engine.register_handler("flaky", PROBES, "attempt_log")
    log = tmp_path / "attempts.log"
    task_id = engine.create("flaky", {"log": str(log), "fails": 1}, retry_interval=0.6)
    waiting = present(until(lambda: _pending_after_failure(engine, task_id), timeout=10))
    assert waiting.error is not None
    assert waiting.error.type == "ValueError"
    assert waiting.date_next_process is not None
    assert waiting.date_next_process - waiting.date_modified == timedelta(seconds=0.6)
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.error is None
    (_, first), (_, second) = _attempt_times(log)
    assert second - first >= 0.6 - 0.002


def _pending_after_failure(
    engine: taskengine.TaskEngine, task_id: str
) -> taskengine.BackgroundTask | None:
    task = engine.get(task_id)
    if task is not None and task.status is TaskStatus.PENDING and task.attempts == 1:
        return task
    return None


def test_retry_runs_a_waiting_task_now(engine: taskengine.TaskEngine, tmp_path: Path) -> None:
    engine.register_handler("flaky", PROBES, "attempt_log")
    log = tmp_path / "attempts.log"
    task_id = engine.create("flaky", {"log": str(log), "fails": 1}, retry_interval=3600)
    until(lambda: _pending_after_failure(engine, task_id), timeout=10)
    assert engine.retry(task_id) is True
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.attempts == 2


def test_retry_revives_a_failed_task_for_one_more_attempt(
    engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    engine.register_handler("flaky", PROBES, "attempt_log")
    log = tmp_path / "attempts.log"
    task_id = engine.create("flaky", {"log": str(log), "fails": 1}, retry_count=0, retain_for=None)
    assert engine.wait(task_id, timeout=20).status is TaskStatus.FAILED
    assert engine.retry(task_id) is True
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.attempts == 2
    assert final.result["attempt"] == 2
    assert final.error is None
    # Success is final: nothing to retry.
    assert engine.retry(task_id) is False


def test_retry_answers_false_for_unknown_and_deleted_tasks(
    engine: taskengine.TaskEngine,
) -> None:
    engine.register_handler("fail", BASIC, "fail")
    task_id = engine.create("fail", "x", retry_count=0)  # retain_for=0: deleted when it fails
    assert engine.wait(task_id, timeout=20).status is TaskStatus.FAILED
    assert engine.retry(task_id) is False
    assert engine.retry("0" * 32) is False


def test_run_at_in_the_future_is_not_started_before_it(engine: taskengine.TaskEngine) -> None:
    engine.register_handler("when", PROBES, "started_at")
    run_at = datetime.now(UTC) + timedelta(seconds=0.5)
    task_id = engine.create("when", run_at=run_at, retain_for=None)
    early = engine.get(task_id)
    assert early is not None
    assert early.status is TaskStatus.PENDING
    assert early.date_next_process is not None
    assert abs(early.date_next_process - run_at) < timedelta(milliseconds=1)
    final = engine.wait(task_id, timeout=20)
    _, started = final.result
    assert started >= run_at.timestamp() - 0.001
    assert started < run_at.timestamp() + 5
    assert final.date_next_process is None


def test_run_at_in_the_past_runs_at_once(engine: taskengine.TaskEngine) -> None:
    engine.register_handler("when", PROBES, "started_at")
    past = datetime.now(UTC) - timedelta(days=1)
    assert engine.wait(engine.create("when", run_at=past), 20).status is TaskStatus.SUCCESS


def test_retry_runs_a_task_scheduled_for_later_now(engine: taskengine.TaskEngine) -> None:
    engine.register_handler("when", PROBES, "started_at")
    later = datetime.now(UTC) + timedelta(hours=1)
    task_id = engine.create("when", run_at=later)
    assert engine.retry(task_id) is True
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.result[1] < later.timestamp() - 3000


def test_retain_for_zero_deletes_at_once_but_wait_returns_the_snapshot(
    engine: taskengine.TaskEngine,
) -> None:
    engine.register_handler("echo", BASIC, "echo")
    task_id = engine.create("echo", {"k": "v"})
    final = engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.result == {"k": "v"}
    assert engine.get(task_id) is None
    assert engine.store.get(task_id) is None  # deleted, not just hidden
    assert task_id not in {t.id for t in engine.query(page_size=1000).entities}
    # A later wait still gets the cached final snapshot.
    again = engine.wait(task_id, timeout=5)
    assert again.status is TaskStatus.SUCCESS
    assert again.result == {"k": "v"}


def test_retain_for_keeps_the_task_that_long_then_it_is_gone(
    engine: taskengine.TaskEngine,
) -> None:
    engine.register_handler("echo", BASIC, "echo")
    task_id = engine.create("echo", "kept", retain_for=1)
    final = engine.wait(task_id, timeout=20)
    assert final.date_completed is not None
    assert final.date_retain_until == final.date_completed + timedelta(seconds=1)
    retain_until = final.date_retain_until.timestamp()
    visible = engine.get(task_id)
    if time.time() < retain_until - 0.1:  # guards against a stalled machine only
        assert visible is not None
        assert visible.result == "kept"
        assert task_id in {t.id for t in engine.query(status="success").entities}
    until(lambda: engine.get(task_id) is None, timeout=10)
    assert time.time() >= retain_until - 0.001
    assert task_id not in {t.id for t in engine.query(page_size=1000).entities}
    assert engine.remove(task_id) is False
    assert engine.cancel(task_id) is False
    assert engine.retry(task_id) is False


def test_cancelled_tasks_follow_retain_for(engine: taskengine.TaskEngine) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    dropped = engine.create("unhandled", run_at=later)
    kept = engine.create("unhandled", run_at=later, retain_for=None)
    assert engine.cancel(dropped) is True
    assert engine.cancel(kept) is True
    assert engine.get(dropped) is None
    assert engine.wait(dropped, timeout=5).status is TaskStatus.CANCELLED
    stored = engine.get(kept)
    assert stored is not None
    assert stored.status is TaskStatus.CANCELLED
    assert stored.date_cancelled is not None
    assert stored.date_retain_until is None


def test_idempotency_key_returns_the_existing_task_while_it_exists(
    engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    engine.register_handler("bump", BASIC, "bump")
    counter = tmp_path / "counter"
    first = engine.create("bump", str(counter), idempotency_key="k1", retain_for=None)
    assert engine.create("bump", str(counter), idempotency_key="k1", retain_for=None) == first
    assert engine.wait(first, timeout=20).result == 1
    # The finished task is retained, so it still exists: the key still maps to it.
    assert engine.create("bump", str(counter), idempotency_key="k1") == first
    assert counter.read_bytes() == b"x"
    # A task deleted when it finished frees its key.
    gone = engine.create("bump", str(counter), idempotency_key="k2")
    assert engine.wait(gone, timeout=20).result == 2
    assert engine.get(gone) is None
    fresh = engine.create("bump", str(counter), idempotency_key="k2")
    assert fresh != gone
    assert engine.wait(fresh, timeout=20).result == 3


def test_the_retention_sweep_deletes_an_expired_row_soon_after_expiry(
    memory_engine: taskengine.TaskEngine,
) -> None:
    memory_engine.register_handler("echo", BASIC, "echo")
    task_id = memory_engine.create("echo", "short-lived", retain_for=0.2)
    memory_engine.wait(task_id, timeout=20)
    until(lambda: memory_engine.get(task_id) is None, timeout=10)
    until(lambda: memory_engine.store.get(task_id) is None, timeout=3)
