"""Inline execution's own rules: when attempts run, where, and what it refuses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskengine
from taskengine import testing
from tests.conftest import worker_pids
from tests.testing import handlers

MODULE = "tests.testing.handlers"


@pytest.fixture
def clock() -> testing.FakeClock:
    made = testing.FakeClock()
    handlers.CLOCK[:] = [made]
    return made


@pytest.fixture
def inline(clock: testing.FakeClock) -> Iterator[taskengine.TaskEngine]:
    eng = taskengine.TaskEngine(taskengine.MemoryStore(), execution="inline", clock=clock)
    yield eng
    eng.stop()


def test_execution_is_validated() -> None:
    for bad in ("thread", "", None, 1):
        with pytest.raises(taskengine.TaskValidationError, match="execution"):
            taskengine.TaskEngine(execution=bad)  # type: ignore[arg-type]
    assert taskengine.TaskEngine(execution="processes").execution == "processes"


def test_nothing_runs_until_asked_and_no_thread_or_process(
    inline: taskengine.TaskEngine,
) -> None:
    threads = {t.name for t in threading.enumerate()}
    inline.register_handler("echo", MODULE, "echo")
    task_id = inline.create("echo", 7, retain_for=None)
    inline.start()
    task = inline.get(task_id)
    assert task is not None
    assert task.status is taskengine.TaskStatus.PENDING
    assert inline.run_next() is True
    assert inline.run_next() is False
    task = inline.get(task_id)
    assert task is not None
    assert task.result == 7
    new = {t.name for t in threading.enumerate()} - threads
    assert "taskengine-reactor" not in new
    assert not worker_pids()


def test_run_until_idle_counts_attempts_and_starts_the_engine(
    inline: taskengine.TaskEngine,
) -> None:
    inline.register_handler("behave", MODULE, "behave")
    inline.create_many(
        "behave", [{"do": "ok"}] * 3 + [{"do": "fail"}], retry_count=1, retry_interval=0
    )
    assert inline.run_until_idle() == 5  # three successes, a failure and its retry
    assert inline.run_until_idle() == 0


def test_handler_runs_in_the_calling_thread(inline: taskengine.TaskEngine) -> None:
    inline.register_handler("ctx", "tests.handlers.basic", "context_info")
    task_id = inline.create("ctx", retain_for=None)
    inline.run_until_idle()
    task = inline.get(task_id)
    assert task is not None
    assert task.result == {"id": task_id, "type": "ctx", "attempt": 1}


def test_due_order_across_types_is_oldest_first(
    inline: taskengine.TaskEngine, clock: testing.FakeClock
) -> None:
    order: list[str] = []
    inline.register_handler("b", MODULE, "echo", lambda t: order.append(t.payload))
    inline.register_handler("a", MODULE, "echo", lambda t: order.append(t.payload))
    inline.create("b", "b1", retain_for=None)
    clock.advance(0.001)
    inline.create("a", "a1", retain_for=None)
    clock.advance(0.001)
    inline.create("b", "b2", retain_for=None)
    inline.run_until_idle()
    assert order[::2] == ["b1", "a1", "b2"]


def test_max_attempts_stops_a_task_that_never_settles(inline: taskengine.TaskEngine) -> None:
    inline.register_handler("fail", MODULE, "fail")
    inline.create("fail", None, retry_count=None, retry_interval=0)
    with pytest.raises(taskengine.TaskEngineError, match="not idle after 50 attempts"):
        inline.run_until_idle(max_attempts=50)
    with pytest.raises(taskengine.TaskValidationError, match="max_attempts"):
        inline.run_until_idle(max_attempts=0)


def test_run_until_idle_needs_inline_mode() -> None:
    eng = taskengine.TaskEngine()
    try:
        with pytest.raises(taskengine.TaskEngineError, match="execution='inline'"):
            eng.run_until_idle()
        with pytest.raises(taskengine.TaskEngineError, match="execution='inline'"):
            eng.run_next()
    finally:
        eng.stop()


def test_stopped_engine_refuses(inline: taskengine.TaskEngine) -> None:
    inline.stop()
    with pytest.raises(taskengine.EngineStoppedError):
        inline.run_until_idle()


def test_timeout_is_judged_on_the_engine_clock(inline: taskengine.TaskEngine) -> None:
    inline.register_handler("slow", MODULE, "slow", execution_timeout=5)
    within = inline.create("slow", {"seconds": 5}, retain_for=None)
    beyond = inline.create("slow", {"seconds": 5.001}, retain_for=None)
    inline.run_until_idle()
    ok, late = inline.get(within), inline.get(beyond)
    assert ok is not None
    assert late is not None
    assert ok.result == "finished"
    assert late.error is not None
    assert late.error.type == "TaskTimeoutError"
    assert late.result is None


def test_hooks_run_once_per_inline_worker(
    inline: taskengine.TaskEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKENGINE_TESTING_MARKERS", str(tmp_path))
    inline.register_handler(
        "behave",
        MODULE,
        "behave",
        initialise_method="init_mark",
        shutdown_method="shutdown_mark",
        max_tasks_per_worker=3,
    )
    inline.create_many("behave", [{"do": "ok"}] * 4)
    inline.run_until_idle()
    # Recycled after three attempts: two workers initialised, the first one shut down.
    assert len((tmp_path / "init").read_text().split()) == 2
    assert len((tmp_path / "shutdown").read_text().split()) == 1
    inline.create("behave", {"do": "crash"}, retry_count=0)
    inline.create("behave", {"do": "ok"})
    inline.run_until_idle()
    # A crash ends the worker without its shutdown method; the next attempt starts a new one.
    assert len((tmp_path / "init").read_text().split()) == 3
    assert len((tmp_path / "shutdown").read_text().split()) == 1
    inline.stop()
    assert len((tmp_path / "shutdown").read_text().split()) == 2


def test_cancel_terminate_during_an_attempt_is_not_written_back(
    inline: taskengine.TaskEngine,
) -> None:
    handlers.ENGINE[:] = [inline]
    statuses: list[str] = []
    inline.register_handler(
        "cancel", MODULE, "cancel_self", lambda t: statuses.append(t.status.value)
    )
    task_id = inline.create("cancel", 1, retain_for=None)
    assert inline.run_until_idle() == 1
    final = inline.get(task_id)
    assert final is not None
    assert final.status is taskengine.TaskStatus.CANCELLED
    assert final.result is None
    assert statuses == ["processing", "cancelled"]


def test_unregistered_type_waits(inline: taskengine.TaskEngine) -> None:
    inline.register_handler("echo", MODULE, "echo")
    inline.unregister_handler("echo")
    task_id = inline.create("echo", 1)
    assert inline.run_until_idle() == 0
    inline.register_handler("echo", MODULE, "echo")
    assert inline.run_until_idle() == 1
    assert inline.wait(task_id, timeout=0).result == 1


def test_crash_worker_outside_a_handler_raises() -> None:
    with pytest.raises(taskengine.TaskEngineError, match="inside a task handler"):
        testing.crash_worker()


def test_wait_all_raises_the_handler_error(inline: taskengine.TaskEngine) -> None:
    inline.register_handler("behave", MODULE, "behave")
    ok = inline.create("behave", {"do": "ok", "value": 1})
    bad = inline.create("behave", {"do": "fail", "value": 2}, retry_count=0)
    with pytest.raises(testing.TaskFailedError, match="asked to fail") as caught:
        testing.wait_all(inline, [ok, bad])
    assert caught.value.task.id == bad
    finals = testing.wait_all(inline, [ok], timeout=0)
    assert finals[0].result == 1


def test_run_until_idle_from_inside_an_attempt_is_refused(inline: taskengine.TaskEngine) -> None:
    handlers.ENGINE[:] = [inline]
    inline.register_handler("inside", MODULE, "run_inside")
    task_id = inline.create("inside", retain_for=None)
    inline.run_until_idle()
    task = inline.get(task_id)
    assert task is not None
    assert task.result == "run_next()/run_until_idle() was called from inside an inline attempt"


def test_threads_driving_one_engine_run_one_attempt_at_a_time(
    inline: taskengine.TaskEngine,
) -> None:
    inline.register_handler("slow", MODULE, "concurrency_probe")
    ids = inline.create_many("slow", [None] * 20, retain_for=None)
    threads = [threading.Thread(target=inline.run_until_idle) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    results = [t.result for t in testing.wait_all(inline, ids, timeout=0)]
    assert max(results) == 1  # never two attempts at once


def test_stats_count_inline_attempts_like_pools(inline: taskengine.TaskEngine) -> None:
    inline.register_handler("echo", MODULE, "echo")
    inline.register_handler("fail", MODULE, "fail")
    inline.register_handler("crash", MODULE, "crash")
    inline.create_many("echo", [1, 2], retain_for=None)
    inline.create("fail", None, retry_count=0, retain_for=None)
    inline.create("crash", None, retry_count=0, retain_for=None)
    inline.run_until_idle()
    stats = inline.stats()
    echo, fail, crash = stats.of("echo"), stats.of("fail"), stats.of("crash")
    assert (echo.success, echo.tasks_done, echo.failures, echo.crashes) == (2, 2, 0, 0)
    assert echo.workers_alive == 1
    assert echo.mean_run_time is not None
    assert (fail.failed, fail.tasks_done, fail.failures) == (1, 1, 1)
    assert (crash.failed, crash.tasks_done, crash.crashes) == (1, 0, 1)
    assert crash.workers_alive == 0  # a crashed inline worker is discarded
