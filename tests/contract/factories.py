"""Task builders for the store contract tests: every record is made through ``transitions``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from taskengine.core import codec, cursor, ids, models, transitions

#: A fixed, millisecond-exact instant that the contract tests treat as "now".
T0 = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
NODE = "host:1:test"
Status = models.TaskStatus

_ids = ids.IdGenerator()


def at(millis: int) -> datetime:
    """``T0`` plus ``millis`` milliseconds."""
    return T0 + timedelta(milliseconds=millis)


def new_id() -> str:
    """A fresh task id."""
    return _ids.new_id()


def new(
    task_type: str = "alpha",
    *,
    now: datetime = T0,
    run_at: datetime | None = None,
    payload: Any = None,
    retry_count: int | None = None,
    retain_for: float | None = None,
    key: str | None = None,
    task_id: str | None = None,
) -> models.BackgroundTask:
    """A freshly created pending task (kept forever by default)."""
    return transitions.new_task(
        task_id=task_id or new_id(),
        task_type=task_type,
        payload_blob=codec.encode(payload),
        now=now,
        retry_count=retry_count,
        retry_interval=5.0,
        retain_for=retain_for,
        run_at=run_at,
        idempotency_key=key,
    )


def error(message: str = "boom") -> models.TaskError:
    """A task error with a cause chain."""
    return models.TaskError(
        type="ValueError",
        message=message,
        traceback="Traceback (most recent call last):\n  ...\nValueError: boom\n",
        cause=models.TaskError(type="KeyError", message="'k'"),
    )


def drive(task: models.BackgroundTask, status: Status, now: datetime) -> models.BackgroundTask:
    """Move a pending task to ``status`` through the real transitions, at ``now``."""
    if status is Status.PENDING:
        return task
    if status is Status.CANCELLED:
        return transitions.cancel(task, now)
    task = transitions.claim(task, now, NODE)
    if status is Status.PROCESSING:
        return task
    if status is Status.SUCCESS:
        return transitions.succeed(task, codec.encode({"result": task.id}), now)
    task = attrs.evolve(task, retries_remaining=0)
    return transitions.fail_attempt(task, error(), now)


def full_task() -> models.BackgroundTask:
    """A record with every optional field set (so a round trip checks every column)."""
    task = new(
        "full",
        payload={"nested": [1, 2.5, "three", b"\x00\xff"], "n": None},
        retry_count=4,
        retain_for=12.5,
        key="key-full",
    )
    task = transitions.claim(task, at(10), NODE)
    task = transitions.report_progress(task, 0.25, at(20))
    task = transitions.fail_attempt(task, error(), at(30))
    task = transitions.claim(task, at(40), NODE)
    task = transitions.succeed(task, codec.encode(list(range(50))), at(50))
    # Fields no single transition sets together, so that every column holds a value.
    return attrs.evolve(task, date_cancelled=at(45), progress=0.75, error=error())


def claimer(now: datetime, node: str = NODE) -> Any:
    """The ``claim`` argument of ``claim_due``: ``transitions.claim`` at ``now``."""
    return transitions.Claim(now, node)


def position(task: models.BackgroundTask, field: str) -> cursor.CursorPosition:
    """The cursor position just after ``task`` in a listing sorted by ``field``."""
    value, task_id = cursor.sort_key(task, field)
    return cursor.CursorPosition(value=value, task_id=task_id)
