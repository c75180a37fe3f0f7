"""The status machine of contract.md#transitions, as pure functions.

Stores store, pools run, and this module decides: every change of a task's record is one of
these functions, each taking a task and the current time and returning the new record with
``attrs.evolve``.  They never touch a store or a process, so the engine, the stores and the
model-based tests all share one meaning of each transition.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from taskengine.core import clock, models

__all__ = [
    "Blocked",
    "Claim",
    "cancel",
    "claim",
    "fail_attempt",
    "is_visible",
    "new_task",
    "release",
    "report_progress",
    "retry",
    "succeed",
]

Status = models.TaskStatus


class Blocked(Exception):
    """A transition does not apply to the task's current status (the caller answers False)."""


def _retain_until(task: models.BackgroundTask, finished: datetime) -> datetime | None:
    if task.retain_for is None:
        return None
    return _later(finished, task.retain_for)


def _later(moment: datetime, seconds: float) -> datetime:
    # Records keep whole milliseconds in every store; a sub-millisecond interval must not
    # produce a date that a SQL store would read back differently.
    return clock.truncate_to_millis(moment + timedelta(seconds=seconds))


def new_task(
    *,
    task_id: str,
    task_type: str,
    payload_blob: bytes,
    now: datetime,
    retry_count: int | None,
    retry_interval: float,
    retain_for: float | None,
    run_at: datetime | None,
    idempotency_key: str | None = None,
) -> models.BackgroundTask:
    """The record of a task just created (status pending)."""
    return models.BackgroundTask(
        id=task_id,
        type=task_type,
        status=Status.PENDING,
        payload_blob=payload_blob,
        date_created=now,
        date_modified=now,
        date_next_process=now if run_at is None else max(clock.truncate_to_millis(run_at), now),
        retries_remaining=retry_count,
        retry_interval=retry_interval,
        retain_for=retain_for,
        idempotency_key=idempotency_key,
    )


def claim(task: models.BackgroundTask, now: datetime, node: str) -> models.BackgroundTask:
    """Move pending -> processing: an attempt starts on ``node``."""
    if task.status is not Status.PENDING:
        raise Blocked(task.status)
    return attrs.evolve(
        task,
        status=Status.PROCESSING,
        attempts=task.attempts + 1,
        node_identity=node,
        date_next_process=None,
        date_modified=now,
        progress=None,
    )


@attrs.frozen
class Claim:
    """``claim`` at one time and node, as a value: the ``claim`` argument stores are given.

    Calling it claims one task.  Being data rather than a closure, it also lets a SQL store
    apply the same change to a whole batch in one statement (``SqliteStore`` does, and its
    tests check that the two agree field for field).

    Attributes:
        now: when the attempts start (``date_modified``).
        node: the identity of the node that runs them.
    """

    now: datetime
    node: str

    def __call__(self, task: models.BackgroundTask) -> models.BackgroundTask:
        """``claim(task, now, node)``."""
        return claim(task, self.now, self.node)


def succeed(
    task: models.BackgroundTask, result_blob: bytes, now: datetime
) -> models.BackgroundTask:
    """Move processing -> success: the handler returned ``result_blob``."""
    if task.status is not Status.PROCESSING:
        raise Blocked(task.status)
    return attrs.evolve(
        task,
        status=Status.SUCCESS,
        result_blob=result_blob,
        error=None,
        date_completed=now,
        date_modified=now,
        date_retain_until=_retain_until(task, now),
    )


def fail_attempt(
    task: models.BackgroundTask,
    error: models.TaskError,
    now: datetime,
    *,
    due: datetime | None = None,
) -> models.BackgroundTask:
    """Move processing -> pending (a retry remains) or failed (none remains).

    The retry is due ``retry_interval`` after ``now``, or at ``due`` when given: an attempt cut
    short by the death of its node, not by its handler, keeps the place in the queue it had
    when it was claimed.
    """
    if task.status is not Status.PROCESSING:
        raise Blocked(task.status)
    if task.retries_remaining == 0:
        return attrs.evolve(
            task,
            status=Status.FAILED,
            error=error,
            date_completed=now,
            date_modified=now,
            date_retain_until=_retain_until(task, now),
        )
    remaining = None if task.retries_remaining is None else task.retries_remaining - 1
    return attrs.evolve(
        task,
        status=Status.PENDING,
        error=error,
        retries_remaining=remaining,
        date_next_process=_later(now, task.retry_interval) if due is None else due,
        date_modified=now,
    )


def release(task: models.BackgroundTask, now: datetime) -> models.BackgroundTask:
    """Move processing -> pending for a claimed attempt that never started.

    A prefetched attempt waits in its worker's pipe; if the worker dies first, the attempt did
    not run, so it is handed back: no attempt is counted and no retry is used.
    """
    if task.status is not Status.PROCESSING or task.attempts < 1:
        raise Blocked(task.status)
    return attrs.evolve(
        task,
        status=Status.PENDING,
        attempts=task.attempts - 1,
        date_next_process=now,
        date_modified=now,
        progress=None,
    )


def cancel(
    task: models.BackgroundTask, now: datetime, *, terminate: bool = False
) -> models.BackgroundTask:
    """Move pending -> cancelled, or processing -> cancelled when ``terminate``."""
    allowed = (Status.PENDING, Status.PROCESSING) if terminate else (Status.PENDING,)
    if task.status not in allowed:
        raise Blocked(task.status)
    return attrs.evolve(
        task,
        status=Status.CANCELLED,
        date_cancelled=now,
        date_modified=now,
        date_next_process=None,
        date_retain_until=_retain_until(task, now),
    )


def retry(task: models.BackgroundTask, now: datetime) -> models.BackgroundTask:
    """A waiting pending task becomes due now; a failed task is revived for one more attempt."""
    if task.status is Status.PENDING:
        return attrs.evolve(task, date_next_process=now, date_modified=now)
    if task.status is Status.FAILED:
        return attrs.evolve(
            task,
            status=Status.PENDING,
            date_next_process=now,
            date_completed=None,
            date_retain_until=None,
            date_modified=now,
        )
    raise Blocked(task.status)


def report_progress(
    task: models.BackgroundTask, fraction: float, now: datetime
) -> models.BackgroundTask:
    """Record a processing task's latest progress fraction."""
    if task.status is not Status.PROCESSING:
        raise Blocked(task.status)
    return attrs.evolve(task, progress=fraction, date_modified=now)


def is_visible(task: models.BackgroundTask, now: datetime) -> bool:
    """False once a finished task's retention has passed (even before the sweep deletes it)."""
    return task.date_retain_until is None or task.date_retain_until > now
