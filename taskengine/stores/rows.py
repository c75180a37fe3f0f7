"""Task rows of the SQL backends: the column order and the conversion of a task to and from a row.

SQLite and PostgreSQL keep the same columns with the same encodings (dates as milliseconds
since the epoch, the error as its JSON form, statuses as their values), so both backends'
schemas build their statements on ``COLUMNS`` and convert rows here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final, LiteralString

from taskengine.core import clock, jsonform, models

__all__ = ["COLUMNS", "Row", "from_row", "to_date", "to_row"]

#: A row as the driver returns it.
Row = tuple[Any, ...]

#: Column order of every SELECT and INSERT (``SqliteStore`` converts rows in this order).
COLUMNS: Final[tuple[LiteralString, ...]] = (
    "id",
    "type",
    "status",
    "payload",
    "result",
    "error",
    "date_created",
    "date_modified",
    "date_completed",
    "date_cancelled",
    "date_next_process",
    "date_retain_until",
    "retries_remaining",
    "retry_interval",
    "retain_for",
    "attempts",
    "node_identity",
    "progress",
    "idempotency_key",
)

_WIDTH: Final = len(COLUMNS)
_STATUS_BY_VALUE: Final = {status.value: status for status in models.TaskStatus}
_VALUE_BY_STATUS: Final = {status: status.value for status in models.TaskStatus}


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else clock.to_millis(moment)


def to_date(millis: int | None) -> datetime | None:
    """The aware UTC datetime of a millisecond column value (None stays None)."""
    return None if millis is None else clock.from_millis(millis)


def to_row(task: models.BackgroundTask) -> tuple[object, ...]:
    """The column values of ``task`` in ``COLUMNS`` order."""
    error = None if task.error is None else json.dumps(jsonform.error_to_json(task.error))
    return (
        task.id,
        task.type,
        _VALUE_BY_STATUS[task.status],
        task.payload_blob,
        task.result_blob,
        error,
        clock.to_millis(task.date_created),
        clock.to_millis(task.date_modified),
        _ms(task.date_completed),
        _ms(task.date_cancelled),
        _ms(task.date_next_process),
        _ms(task.date_retain_until),
        task.retries_remaining,
        task.retry_interval,
        task.retain_for,
        task.attempts,
        task.node_identity,
        task.progress,
        task.idempotency_key,
    )


def _status(value: object) -> models.TaskStatus:
    try:
        return _STATUS_BY_VALUE[value]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"{value!r} is not a task status") from None


def from_row(row: Row) -> models.BackgroundTask:
    """The task of a row selected with ``COLUMNS``.

    Raises:
        ValueError: a column holds a value that is not a valid task field.
    """
    # One unpacking and inline None checks: this runs for every row a claim or a page reads.
    (
        task_id,
        task_type,
        status,
        payload,
        result,
        error,
        created,
        modified,
        completed,
        cancelled,
        next_process,
        retain_until,
        retries_remaining,
        retry_interval,
        retain_for,
        attempts,
        node_identity,
        progress,
        idempotency_key,
    ) = row[:_WIDTH]
    millis = clock.from_millis
    return models.BackgroundTask(
        id=task_id,
        type=task_type,
        status=_status(status),
        payload_blob=payload,
        result_blob=result,
        error=None if error is None else models.TaskError.from_json(json.loads(error)),
        date_created=millis(created),
        date_modified=millis(modified),
        date_completed=None if completed is None else millis(completed),
        date_cancelled=None if cancelled is None else millis(cancelled),
        date_next_process=None if next_process is None else millis(next_process),
        date_retain_until=None if retain_until is None else millis(retain_until),
        retries_remaining=retries_remaining,
        retry_interval=retry_interval,
        retain_for=retain_for,
        attempts=attempts,
        node_identity=node_identity,
        progress=progress,
        idempotency_key=idempotency_key,
    )
