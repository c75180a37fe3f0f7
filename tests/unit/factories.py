"""Builders shared by the unit tests: tasks in every status, built only through transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from taskengine.core import codec, models, transitions

#: A fixed, millisecond-exact instant used as "now" by the unit tests.
NOW = datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=UTC)
TASK_ID = "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"
NODE = "host:1234:abcd"

Status = models.TaskStatus


def later(seconds: float) -> datetime:
    """NOW plus ``seconds``."""
    return NOW + timedelta(seconds=seconds)


def new(
    *,
    payload: Any = None,
    task_id: str = TASK_ID,
    task_type: str = "demo",
    now: datetime = NOW,
    retry_count: int | None = 3,
    retry_interval: float = 5.0,
    retain_for: float | None = 0.0,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> models.BackgroundTask:
    """A freshly created pending task."""
    return transitions.new_task(
        task_id=task_id,
        task_type=task_type,
        payload_blob=codec.encode(payload),
        now=now,
        retry_count=retry_count,
        retry_interval=retry_interval,
        retain_for=retain_for,
        run_at=run_at,
        idempotency_key=idempotency_key,
    )


def error(message: str = "boom") -> models.TaskError:
    """A plain task error."""
    return models.TaskError(type="ValueError", message=message, traceback="Traceback: ...\n")


def in_status(status: models.TaskStatus, **options: Any) -> models.BackgroundTask:
    """A task driven to ``status`` through the real transitions (one second per step)."""
    if status is Status.FAILED:
        options.setdefault("retry_count", 0)
    task = new(**options)
    if status is Status.PENDING:
        return task
    if status is Status.CANCELLED:
        return transitions.cancel(task, later(1))
    task = transitions.claim(task, later(1), NODE)
    if status is Status.PROCESSING:
        return task
    if status is Status.SUCCESS:
        return transitions.succeed(task, codec.encode("done"), later(2))
    assert status is Status.FAILED
    return transitions.fail_attempt(task, error(), later(2))
