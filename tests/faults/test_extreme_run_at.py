"""Extreme but well-typed ``run_at`` values: a TaskValidationError at the call, or a stored task.

Moments at the ends of the datetime range with offsets that push them past it, and tzinfo
objects whose ``utcoffset`` raises or answers nonsense, reach ``create`` and ``create_many`` on
a MemoryStore and a SqliteStore engine (never started: only the call and the store matter).
Either the call raises ``TaskValidationError`` and stores nothing, or the task reads back with
``date_next_process`` at the same instant, cut to whole milliseconds (or at its creation, when
that instant is already past).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskengine
from taskengine.scheduler.times import ScheduledTaskTime
from tests.faults.conftest import count_tasks


class AnswerOffset(tzinfo):
    """A tzinfo whose ``utcoffset`` returns (or raises) a fixed answer, whatever it is."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def utcoffset(self, dt: datetime | None) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def __repr__(self) -> str:
        return f"AnswerOffset({self.answer!r})"


class ChangingOffset(tzinfo):
    """A valid offset on the first question, a failure on every later one."""

    def __init__(self) -> None:
        self.asked = 0

    def utcoffset(self, dt: datetime | None) -> timedelta:
        self.asked += 1
        if self.asked > 1:
            raise RuntimeError("asked again")
        return timedelta(hours=-14)


EAST_14, WEST_14 = timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))

hostile_answers = st.one_of(
    st.sampled_from(
        [
            RuntimeError("no offset today"),
            OverflowError("offset overflow"),
            ValueError("plain value error"),
            ZeroDivisionError(),
            RecursionError(),
            None,
            3600,
            "+02:00",
            timedelta.max,
            timedelta.min,
            timedelta(hours=24),
            timedelta(hours=-24),
        ]
    ),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
)
zones = st.one_of(
    st.sampled_from([UTC, EAST_14, WEST_14]),
    st.builds(
        timezone,
        st.timedeltas(
            min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
        ),
    ),
    st.builds(AnswerOffset, hostile_answers),
)
naive_moments = st.one_of(
    st.sampled_from(
        [
            datetime.min,
            datetime.max,
            datetime.min + timedelta(hours=13, minutes=59),
            datetime.max - timedelta(hours=13, minutes=59),
        ]
    ),
    st.datetimes(),
)
moments = st.builds(lambda naive, zone: naive.replace(tzinfo=zone), naive_moments, zones)


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[taskengine.TaskEngine]:
    if request.param == "memory":
        store: Any = taskengine.MemoryStore()
    else:
        store = taskengine.SqliteStore(Path(tmp_path_factory.mktemp("extreme")) / "tasks.db")
    each = taskengine.TaskEngine(store)
    yield each
    each.stop(timeout=5)


def expected_instant(value: datetime) -> datetime | None:
    """The UTC instant of ``value`` cut to milliseconds, or None when it has none."""
    try:
        offset = value.utcoffset()
        if offset is None:
            return None
        utc = value.replace(tzinfo=None) - offset
    except Exception:
        return None
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000, tzinfo=UTC)


def create(engine: taskengine.TaskEngine, value: datetime, *, many: bool) -> list[str]:
    if many:
        return engine.create_many("extreme", [1, 2], run_at=value, retain_for=None)
    return [engine.create("extreme", 1, run_at=value, retain_for=None)]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=moments, many=st.booleans())
def test_create_raises_only_validation_errors_and_stores_nothing_then(
    engine: taskengine.TaskEngine, value: datetime, many: bool
) -> None:
    before = count_tasks(engine)
    instant = expected_instant(value)
    if instant is None:
        with pytest.raises(taskengine.TaskValidationError, match="run_at"):
            create(engine, value, many=many)
        assert count_tasks(engine) == before
        return
    ids = create(engine, value, many=many)
    assert count_tasks(engine) == before + len(ids)
    for task_id in ids:
        task = engine.get(task_id)
        assert task is not None
        # A moment already past is due at once: at the time the task was created.
        assert task.date_next_process == max(instant, task.date_created)
        assert task.date_next_process.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        datetime.min.replace(tzinfo=EAST_14),
        datetime.max.replace(tzinfo=WEST_14),
        datetime(2024, 1, 1, tzinfo=AnswerOffset(RuntimeError("no offset"))),
        datetime(2024, 1, 1, tzinfo=AnswerOffset(timedelta(hours=25))),
        datetime(2024, 1, 1, tzinfo=AnswerOffset(7200)),
    ],
    ids=repr,
)
def test_named_extremes_are_validation_errors_on_both_stores(
    engine: taskengine.TaskEngine, value: datetime
) -> None:
    before = count_tasks(engine)
    with pytest.raises(taskengine.TaskValidationError, match="run_at"):
        engine.create("extreme", 1, run_at=value)
    with pytest.raises(taskengine.TaskValidationError, match="run_at"):
        engine.create_many("extreme", [1, 2, 3], run_at=value)
    assert count_tasks(engine) == before


def test_a_tzinfo_is_asked_once_so_a_changing_answer_cannot_fail_later(
    engine: taskengine.TaskEngine,
) -> None:
    # Near the end of the range, one hour west: valid by the first answer only.
    value = datetime(9999, 12, 31, 9, 0, tzinfo=ChangingOffset())
    task_id = engine.create("extreme", 1, run_at=value, retain_for=None)
    task = engine.get(task_id)
    assert task is not None
    assert task.date_next_process == datetime(9999, 12, 31, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        datetime.min.replace(tzinfo=EAST_14),
        datetime.max.replace(tzinfo=WEST_14),
        datetime(2024, 1, 1, tzinfo=AnswerOffset(RuntimeError("no offset"))),
        datetime(2024, 1, 1, tzinfo=AnswerOffset(timedelta(days=2))),
    ],
    ids=repr,
)
def test_a_schedule_time_refuses_the_same_values(value: datetime) -> None:
    with pytest.raises(taskengine.TaskValidationError, match="next_trigger_time"):
        ScheduledTaskTime(next_trigger_time=value)
