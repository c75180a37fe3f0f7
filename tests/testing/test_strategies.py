"""taskengine.testing.strategies: what each strategy promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import taskengine
from taskengine import testing
from taskengine.core import codec, models
from taskengine.testing import strategies

Status = models.TaskStatus


@given(strategies.payloads())
def test_payloads_round_trip_the_codec(payload: Any) -> None:
    assert codec.decode(codec.encode(payload)) == payload


@settings(max_examples=25)
@given(st.lists(strategies.payloads(), min_size=1, max_size=5))
def test_payloads_round_trip_an_inline_engine(payloads: list[Any]) -> None:
    clock = testing.FakeClock()
    eng = taskengine.TaskEngine(execution="inline", clock=clock)
    try:
        eng.register_handler("echo", "tests.testing.handlers", "echo")
        ids = eng.create_many("echo", payloads, retain_for=None)
        eng.run_until_idle()
        assert [t.result for t in testing.wait_all(eng, ids)] == payloads
    finally:
        eng.stop()


@given(strategies.task_records())
def test_task_records_are_consistent(task: models.BackgroundTask) -> None:
    assert len(task.id) == 32
    assert (task.date_next_process is not None) == (task.status is Status.PENDING)
    if task.status is Status.PROCESSING:
        assert task.attempts >= 1
        assert task.node_identity is not None
    if task.status in (Status.SUCCESS, Status.FAILED):
        assert task.date_completed is not None
    if task.status is Status.SUCCESS:
        assert task.error is None
    if task.status is Status.FAILED:
        assert task.error is not None
    assert taskengine.BackgroundTask.from_json(task.to_json()) == task


@given(strategies.task_records())
def test_task_records_round_trip_the_stores(task: models.BackgroundTask) -> None:
    store = taskengine.MemoryStore()
    store.open()
    store.insert_many([task])
    assert store.get(task.id) == task


@settings(max_examples=20)
@given(strategies.task_records(statuses=(Status.FAILED, Status.CANCELLED)))
def test_task_records_filter_by_status(task: models.BackgroundTask) -> None:
    assert task.status in (Status.FAILED, Status.CANCELLED)


def test_task_records_round_trip_sqlite(tmp_path: Path) -> None:
    store = taskengine.SqliteStore(tmp_path / "records.db")
    store.open()
    try:

        @settings(max_examples=30)
        @given(strategies.task_records())
        def check(task: models.BackgroundTask) -> None:
            if store.get(task.id) is None:
                store.insert_many([task])
                assert store.get(task.id) == task

        check()
    finally:
        store.close()


@given(st.data())
def test_scheduled_task_times_are_valid(data: st.DataObject) -> None:
    from taskengine.scheduler.task_scheduler import ScheduledTaskTime

    value = data.draw(strategies.scheduled_task_times())
    assert isinstance(value, ScheduledTaskTime)
