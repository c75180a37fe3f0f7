"""``engine.stats()``: counts from the store, ages from the clock, pool figures from the reactor."""

from __future__ import annotations

from datetime import timedelta

import pytest

import taskengine
from taskengine.core import clock

from ..conftest import until, worker_pids


def test_counts_and_the_oldest_due_age_on_an_unstarted_engine() -> None:
    fake = clock.FakeClock()
    engine = taskengine.TaskEngine(clock=fake)
    try:
        engine.register_handler("alpha", "tests.handlers.basic", "echo", max_worker_count=3)
        first = engine.create("alpha", 1, retain_for=None)
        fake.advance(5)
        engine.create("alpha", 2, retain_for=None)
        engine.create("beta", 3, run_at=fake.now() + timedelta(hours=1))  # not due: no wait
        assert engine.cancel(first)
        fake.advance(10)
        snapshot = engine.stats()
    finally:
        engine.stop()
    alpha, beta = snapshot.of("alpha"), snapshot.of("beta")
    assert (alpha.pending, alpha.cancelled, alpha.total) == (1, 1, 2)
    assert alpha.oldest_pending_age == pytest.approx(10.0)
    assert beta.pending == 1
    assert beta.oldest_pending_age is None
    assert snapshot.oldest_pending_age == pytest.approx(10.0)
    assert alpha.is_registered
    assert not beta.is_registered
    assert (alpha.workers_alive, alpha.tasks_done, alpha.mean_run_time) == (0, 0, None)
    assert not snapshot.is_dispatching
    assert snapshot.count("pending") == 2
    assert snapshot.of("gamma") == taskengine.TypeStats(task_type="gamma")
    data = snapshot.to_json()
    assert data["totals"]["cancelled"] == 1
    assert [t["type"] for t in data["types"]] == ["alpha", "beta"]


def test_pool_figures_of_a_started_engine() -> None:
    engine = taskengine.TaskEngine().start()
    try:
        engine.register_handler("add", "tests.handlers.basic", "add", max_worker_count=2)
        engine.register_handler("fail", "tests.handlers.basic", "fail", max_worker_count=1)
        ids = engine.create_many("add", [{"a": n, "b": n} for n in range(8)], retain_for=None)
        failing = engine.create("fail", None, retry_count=0, retain_for=None)
        for task_id in [*ids, failing]:
            engine.wait(task_id, timeout=60)
        snapshot = until(lambda: (s := engine.stats()).of("add").tasks_done == 8 and s)
    finally:
        engine.stop()
    add, fail = snapshot.of("add"), snapshot.of("fail")
    assert snapshot.is_dispatching
    assert (add.success, add.attempts, add.failures) == (8, 8, 0)
    assert add.workers_alive <= add.max_worker_count == 2  # idle ones may have been retired
    assert add.workers_busy == 0
    assert add.mean_run_time is not None
    assert add.mean_run_time > 0
    assert (fail.failed, fail.failures, fail.tasks_done) == (1, 1, 1)
    until(lambda: not worker_pids(), timeout=10)


def test_stats_after_stop_raises() -> None:
    engine = taskengine.TaskEngine()
    engine.stop()
    with pytest.raises(taskengine.EngineStoppedError):
        engine.stats()
