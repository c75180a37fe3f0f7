"""One scenario suite, run inline and with real worker processes: the outcomes must agree.

Every test asserts the same records, errors and callback paths in both modes, so inline
execution is proven to decide like the pools (contract.md#testing).
"""

from __future__ import annotations

from datetime import timedelta

from taskengine import TaskStatus
from tests.testing.conftest import Harness

Status = TaskStatus


def test_success_records_result_and_callbacks(harness: Harness) -> None:
    harness.register("echo", "echo")
    task_id = harness.engine.create("echo", {"n": [1, 2]}, retain_for=None)
    final = harness.finish(task_id)
    assert final.status is Status.SUCCESS
    assert final.result == {"n": [1, 2]}
    assert (final.attempts, final.error, final.date_retain_until) == (1, None, None)
    assert final.date_completed == harness.clock.now()
    assert harness.path(task_id) == ["processing", "success"]


def test_failure_retries_on_the_clock_then_fails(harness: Harness) -> None:
    harness.register("fail", "fail")
    task_id = harness.engine.create("fail", "x", retry_count=2, retry_interval=10, retain_for=None)
    harness.settle(task_id, lambda t: t.status is Status.PENDING and t.attempts == 1)
    waiting = harness.engine.get(task_id)
    assert waiting is not None
    assert waiting.retries_remaining == 1
    assert waiting.date_next_process == harness.clock.now() + timedelta(seconds=10)
    assert waiting.error is not None
    assert waiting.error.type == "ValueError"
    harness.clock.advance(9.999)
    if harness.mode == "inline":
        assert harness.engine.run_until_idle() == 0  # not due yet
    harness.clock.advance(0.001)
    harness.settle(task_id, lambda t: t.attempts == 2 and t.status is Status.PENDING)
    harness.clock.advance(10)
    final = harness.finish(task_id)
    assert final.status is Status.FAILED
    assert (final.attempts, final.retries_remaining) == (3, 0)
    assert final.error is not None
    assert (final.error.type, final.error.message) == ("ValueError", "planned failure: 'x'")
    assert final.error.traceback is not None
    assert "planned failure" in final.error.traceback
    assert harness.path(task_id) == ["processing", "pending"] * 2 + ["processing", "failed"]


def test_no_retry_then_manual_retry_revives(harness: Harness) -> None:
    harness.register("fail", "fail")
    task_id = harness.engine.create("fail", 1, retry_count=0, retain_for=None)
    assert harness.finish(task_id).status is Status.FAILED
    assert harness.engine.retry(task_id) is True
    final = harness.finish(task_id)
    assert (final.status, final.attempts) == (Status.FAILED, 2)
    assert harness.path(task_id) == ["processing", "failed", "pending", "processing", "failed"]


def test_cancel_pending_and_run_at(harness: Harness) -> None:
    harness.register("echo", "echo")
    later = harness.clock.now() + timedelta(seconds=60)
    cancelled = harness.engine.create("echo", 1, run_at=later, retain_for=None)
    runs = harness.engine.create("echo", 2, run_at=later, retain_for=None)
    if harness.mode == "inline":
        assert harness.engine.run_until_idle() == 0
    assert harness.engine.cancel(cancelled) is True
    assert harness.engine.cancel(cancelled) is False
    harness.clock.advance(60)
    assert harness.finish(runs).result == 2
    final = harness.engine.wait(cancelled, timeout=0)
    assert (final.status, final.attempts) == (Status.CANCELLED, 0)
    assert final.date_cancelled is not None
    assert harness.path(cancelled) == ["cancelled"]


def test_remove_pending_and_finished(harness: Harness) -> None:
    harness.register("echo", "echo")
    done = harness.engine.create("echo", 1, retain_for=None)
    harness.finish(done)
    waiting = harness.engine.create(
        "echo", 2, run_at=harness.clock.now() + timedelta(hours=1), retain_for=None
    )
    assert harness.engine.remove(done) is True
    assert harness.engine.remove(waiting) is True
    assert harness.engine.remove(waiting) is False
    assert harness.engine.get(done) is None
    assert harness.engine.get(waiting) is None


def test_retention_follows_the_clock(harness: Harness) -> None:
    harness.register("echo", "echo")
    kept = harness.engine.create("echo", "k", retain_for=30)
    gone = harness.engine.create("echo", "g")  # retain_for=0: deleted when it finishes
    final = harness.finish(kept)
    assert final.date_retain_until == final.date_completed + timedelta(seconds=30)
    assert harness.finish(gone).result == "g"  # wait still returns the snapshot
    assert harness.engine.get(gone) is None
    harness.clock.advance(29.999)
    assert harness.engine.get(kept) is not None
    harness.clock.advance(0.001)
    assert harness.engine.get(kept) is None
    assert harness.engine.retry(kept) is False


def test_crash_costs_one_attempt(harness: Harness) -> None:
    harness.register("crash", "crash")
    task_id = harness.engine.create("crash", None, retry_count=1, retry_interval=0)
    final = harness.finish(task_id)
    assert (final.status, final.attempts) == (Status.FAILED, 2)
    assert final.error is not None
    assert final.error.type == "WorkerCrashedError"
    assert "killed by signal 9 (SIGKILL) during attempt 2" in final.error.message


def test_timeout_fails_the_attempt(harness: Harness) -> None:
    harness.register("slow", "slow", execution_timeout=0.5)
    task_id = harness.engine.create("slow", {"seconds": 5}, retry_count=0)
    final = harness.finish(task_id)
    assert final.status is Status.FAILED
    assert final.error is not None
    assert final.error.type == "TaskTimeoutError"
    assert "execution_timeout=0.5s" in final.error.message


def test_init_failure_is_a_worker_init_error(harness: Harness) -> None:
    harness.register("echo", "echo", initialise_method="init_raise")
    task_id = harness.engine.create("echo", 1, retry_count=0)
    final = harness.finish(task_id)
    assert final.error is not None
    assert final.error.type == "WorkerInitError"
    assert final.error.message == (
        "starting a worker for tests.testing.handlers.echo failed: RuntimeError: initialise refused"
    )


def test_context_progress_and_async(harness: Harness) -> None:
    harness.register("progress", "progress")
    harness.register("async", "async_double")
    first = harness.engine.create("progress", None, retain_for=None)
    second = harness.engine.create("async", 21, retain_for=None)
    done = harness.finish(first)
    assert (done.result, done.progress) == (1, 0.5)
    assert harness.finish(second).result == 42


def test_callbacks_in_order_for_a_batch(harness: Harness) -> None:
    harness.register("behave", "behave")
    payloads = [{"do": "ok", "value": 1}, {"do": "fail"}, {"do": "ok", "value": 3}]
    ids = harness.engine.create_many("behave", payloads, retry_count=0, retain_for=None)
    finals = [harness.finish(task_id) for task_id in ids]
    assert [f.status for f in finals] == [Status.SUCCESS, Status.FAILED, Status.SUCCESS]
    for task_id, final in zip(ids, finals, strict=True):
        assert harness.path(task_id) == ["processing", final.status.value]
    page = harness.engine.query(task_type="behave", page_size=10)
    assert [t.id for t in page.entities] == ids
