"""hypothesis strategies for tests of code that uses taskengine (needs ``hypothesis``).

* :func:`payloads`: values that survive ``create`` -> handler -> ``result`` unchanged (they
  compare equal after the cloudpickle round trip every store applies).
* :func:`task_records`: ``BackgroundTask`` records in every status, each reached by a random
  path of the engine's own transitions (so every record is one the engine could store).
* :func:`scheduled_task_times`: valid ``ScheduledTaskTime`` values (needs the scheduler).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "taskengine.testing.strategies needs hypothesis: pip install 'taskengine[testing]'"
    ) from exc

from taskengine.core import clock, codec, models, transitions
from taskengine.scheduler import times as scheduler_times

__all__ = ["payloads", "scheduled_task_times", "task_errors", "task_records", "task_types"]

_MIN_DATE = datetime(2000, 1, 1)
_MAX_DATE = datetime(2100, 1, 1)
_HEX = "0123456789abcdef"
#: Cron expressions of five fields that every cron library accepts.
_CRONS = ("* * * * *", "*/5 * * * *", "0 * * * *", "30 2 * * *", "0 9 * * 1-5", "15 0 1 * *")


def payloads(*, max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Payloads that round-trip: equal to themselves after encoding and decoding.

    None, bools, ints, finite floats, text, bytes, and lists, tuples and str-keyed dicts of
    them.  NaN is left out because it never equals itself.
    """
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=50)
        | st.binary(max_size=50)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5)
            | st.tuples(children, children)
            | st.dictionaries(st.text(max_size=10), children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def task_types() -> st.SearchStrategy[str]:
    """Non-empty task type names (letters, digits, ``._-``)."""
    return st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
        min_size=1,
        max_size=30,
    )


def task_errors() -> st.SearchStrategy[models.TaskError]:
    """``TaskError`` values, sometimes with a cause."""
    leaf = st.builds(
        models.TaskError,
        type=st.sampled_from(["ValueError", "KeyError", "WorkerCrashedError", "TaskTimeoutError"]),
        message=st.text(max_size=80),
        traceback=st.none() | st.text(max_size=200),
    )
    return (
        st.builds(
            models.TaskError,
            type=st.sampled_from(["RuntimeError", "WorkerInitError"]),
            message=st.text(max_size=80),
            traceback=st.none() | st.text(max_size=200),
            cause=st.none() | leaf,
        )
        | leaf
    )


def _dates() -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=_MIN_DATE, max_value=_MAX_DATE, timezones=st.just(UTC)).map(
        clock.truncate_to_millis
    )


_STEPS = ("claim", "succeed", "fail", "cancel", "terminate", "retry", "release")


@st.composite
def task_records(
    draw: st.DrawFn, *, statuses: tuple[models.TaskStatus, ...] | None = None
) -> models.BackgroundTask:
    """``BackgroundTask`` records reached through ``transitions`` from a fresh task.

    Args:
        draw: supplied by hypothesis.
        statuses: keep only records in one of these statuses (all by default).
    """
    now = draw(_dates())
    task = transitions.new_task(
        task_id="".join(draw(st.lists(st.sampled_from(_HEX), min_size=32, max_size=32))),
        task_type=draw(task_types()),
        payload_blob=codec.encode(draw(payloads(max_leaves=5))),
        now=now,
        retry_count=draw(st.none() | st.integers(0, 5)),
        retry_interval=draw(st.sampled_from([0.0, 0.5, 5.0, 60.0])),
        retain_for=draw(st.sampled_from([None, 0.0, 1.0, 3600.0])),
        run_at=draw(st.none() | st.just(now + timedelta(seconds=30))),
    )
    for step in draw(st.lists(st.sampled_from(_STEPS), max_size=8)):
        now = clock.truncate_to_millis(now + timedelta(seconds=draw(st.integers(0, 120))))
        try:
            task = _step(task, step, now, draw)
        except transitions.Blocked:
            continue
    if statuses is not None:
        from hypothesis import assume

        assume(task.status in statuses)
    return task


def _step(
    task: models.BackgroundTask, step: str, now: datetime, draw: st.DrawFn
) -> models.BackgroundTask:
    if step == "claim":
        return transitions.claim(task, now, "node-under-test")
    if step == "succeed":
        return transitions.succeed(task, codec.encode(draw(payloads(max_leaves=5))), now)
    if step == "fail":
        return transitions.fail_attempt(task, draw(task_errors()), now)
    if step in ("cancel", "terminate"):
        return transitions.cancel(task, now, terminate=step == "terminate")
    if step == "retry":
        return transitions.retry(task, now)
    return transitions.release(task, now)


def scheduled_task_times() -> st.SearchStrategy[scheduler_times.ScheduledTaskTime]:
    """Valid ``ScheduledTaskTime`` values: one-shot, interval, or cron, with or without a start."""
    scheduled_task_time = scheduler_times.ScheduledTaskTime
    start = st.none() | _dates()
    once = st.builds(scheduled_task_time, next_trigger_time=start)
    every = st.builds(
        scheduled_task_time,
        next_trigger_time=start,
        interval_days=st.integers(0, 3),
        interval_hours=st.integers(0, 23),
        interval_minutes=st.integers(0, 59),
        interval_seconds=st.integers(1, 59),
    )
    cron = st.builds(scheduled_task_time, next_trigger_time=start, cron=st.sampled_from(_CRONS))
    return once | every | cron
