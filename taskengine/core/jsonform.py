"""The TWIN JSON form of a task.

CamelCase names, ISO-8601 UTC dates with milliseconds and a
literal ``Z`` (as JavaScript's ``toISOString`` writes them), durations in integer milliseconds,
and ``retainFor = -1`` for "keep forever".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from taskengine.core import codec, errors, validation
from taskengine.core.states import TaskStatus

if TYPE_CHECKING:
    from taskengine.core import models

__all__ = [
    "ErrorFields",
    "error_fields_from_json",
    "error_to_json",
    "format_date",
    "parse_date",
    "task_fields_from_json",
    "task_to_json",
]

_DATE_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def format_date(moment: datetime | None) -> str | None:
    """Write an aware datetime as ``YYYY-MM-DDTHH:MM:SS.sssZ`` (None stays None)."""
    if moment is None:
        return None
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
        f"{m.microsecond // 1000:03d}Z"
    )


def parse_date(field: str, text: object) -> datetime | None:
    """Read a date written by :func:`format_date`; ``TaskValidationError`` if malformed."""
    if text is None:
        return None
    if not isinstance(text, str) or not _DATE_RE.fullmatch(text):
        raise errors.TaskValidationError(field, text, "expected YYYY-MM-DDTHH:MM:SS.sssZ (UTC)")
    try:
        return datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError as exc:
        raise errors.TaskValidationError(field, text, str(exc)) from exc


def _millis(seconds: float) -> int:
    return round(seconds * 1000)


def error_to_json(error: models.TaskError) -> dict[str, Any]:
    """Return the JSON form of a task error."""
    return {
        "type": error.type,
        "message": error.message,
        "traceback": error.traceback,
        "cause": None if error.cause is None else error_to_json(error.cause),
    }


#: Deepest ``cause`` chain ``error_from_json`` accepts (the engine itself writes at most
#: ``models.MAX_CAUSE_DEPTH + 1`` levels); deeper input is refused, never a RecursionError.
MAX_JSON_CAUSE_DEPTH = 100


class ErrorFields(TypedDict):
    """The checked fields of a task error's JSON form (``TaskError.from_fields`` builds it)."""

    type: str
    message: str
    traceback: str | None
    cause: ErrorFields | None


def error_fields_from_json(data: object, field: str = "error", _depth: int = 0) -> ErrorFields:
    """Check a task error's JSON form and return its fields."""
    if _depth > MAX_JSON_CAUSE_DEPTH:
        raise errors.TaskValidationError(
            field, "<nested>", f"causes nested deeper than {MAX_JSON_CAUSE_DEPTH}"
        )
    if not isinstance(data, dict):
        raise errors.TaskValidationError(field, data, "expected an object")
    kind, message, tb = data.get("type"), data.get("message"), data.get("traceback")
    if not isinstance(kind, str) or not isinstance(message, str):
        raise errors.TaskValidationError(field, data, "type and message must be strings")
    if tb is not None and not isinstance(tb, str):
        raise errors.TaskValidationError(f"{field}.traceback", tb, "expected a string or null")
    cause = data.get("cause")
    return ErrorFields(
        type=kind,
        message=message,
        traceback=tb,
        cause=None
        if cause is None
        else error_fields_from_json(cause, f"{field}.cause", _depth + 1),
    )


def task_to_json(task: models.BackgroundTask) -> dict[str, Any]:
    """Return the TWIN JSON form of a task."""
    data: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "status": task.status.value,
        "payload": task.payload,
        "result": task.result,
        "error": None if task.error is None else error_to_json(task.error),
        "dateCreated": format_date(task.date_created),
        "dateModified": format_date(task.date_modified),
        "dateCompleted": format_date(task.date_completed),
        "dateCancelled": format_date(task.date_cancelled),
        "dateNextProcess": format_date(task.date_next_process),
        "dateRetainUntil": format_date(task.date_retain_until),
        "retriesRemaining": task.retries_remaining,
        "retryInterval": _millis(task.retry_interval),
        "retainFor": -1 if task.retain_for is None else _millis(task.retain_for),
        "attempts": task.attempts,
        "nodeIdentity": task.node_identity,
        "progress": task.progress,
    }
    if task.idempotency_key is not None:
        data["idempotencyKey"] = task.idempotency_key
    return data


#: Every key of the JSON form; each must be present (null where the field allows it).
REQUIRED_KEYS = (
    "id",
    "type",
    "status",
    "payload",
    "result",
    "error",
    "dateCreated",
    "dateModified",
    "dateCompleted",
    "dateCancelled",
    "dateNextProcess",
    "dateRetainUntil",
    "retriesRemaining",
    "retryInterval",
    "retainFor",
    "attempts",
    "nodeIdentity",
    "progress",
)
_MAX_DURATION_MS = int(validation.MAX_DURATION * 1000)


def _int_field(
    data: dict[str, Any], name: str, *, minimum: int, nullable: bool, maximum: int | None = None
) -> int | None:
    value = data.get(name)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise errors.TaskValidationError(name, value, f"expected an integer >= {minimum}")
    if value > (validation.MAX_COUNT if maximum is None else maximum):
        raise errors.TaskValidationError(name, value, "too large")
    return value


def _str_field(data: dict[str, Any], name: str, *, nullable: bool = False) -> str | None:
    value = data.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or (not nullable and not value):
        raise errors.TaskValidationError(name, value, "expected a non-empty string")
    return value


def _required_date(data: dict[str, Any], name: str) -> datetime:
    value = parse_date(name, data.get(name))
    if value is None:
        raise errors.TaskValidationError(name, None, "this date is required")
    return value


def task_fields_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """Check a task's TWIN JSON form and return the fields of its ``BackgroundTask``.

    ``error`` is left as ``ErrorFields`` (or None); ``BackgroundTask.from_json`` builds the
    objects, so that this module needs the model classes only for type checking.
    """
    if not isinstance(data, dict):
        raise errors.TaskValidationError("data", data, "expected a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise errors.TaskValidationError(missing[0], None, "this key is missing")
    task_id = _str_field(data, "id")
    task_type = _str_field(data, "type")
    assert task_id is not None
    assert task_type is not None
    try:
        status = TaskStatus(str(data.get("status")))
    except ValueError as exc:
        raise errors.TaskValidationError("status", data.get("status"), "unknown status") from exc
    retain_ms = _int_field(data, "retainFor", minimum=-1, nullable=False, maximum=_MAX_DURATION_MS)
    retry_ms = _int_field(
        data, "retryInterval", minimum=0, nullable=False, maximum=_MAX_DURATION_MS
    )
    assert retain_ms is not None
    assert retry_ms is not None
    progress = data.get("progress")
    if progress is not None and (
        isinstance(progress, bool)
        or not isinstance(progress, int | float)
        or not 0.0 <= progress <= 1.0
    ):
        raise errors.TaskValidationError("progress", progress, "expected a number in 0..1")
    error = data.get("error")
    result = data.get("result")
    try:
        payload_blob = codec.encode(data.get("payload"))
        # A success always stores its handler's return value, None included (as transitions
        # .succeed does), so that a record survives the JSON form unchanged.
        success = status is TaskStatus.SUCCESS
        result_blob = codec.encode(result) if success or result is not None else None
    except Exception as exc:
        raise errors.TaskValidationError("payload", data.get("payload"), str(exc)) from exc
    return {
        "id": task_id,
        "type": task_type,
        "status": status,
        "payload_blob": payload_blob,
        "result_blob": result_blob,
        "error": None if error is None else error_fields_from_json(error),
        "date_created": _required_date(data, "dateCreated"),
        "date_modified": _required_date(data, "dateModified"),
        "date_completed": parse_date("dateCompleted", data.get("dateCompleted")),
        "date_cancelled": parse_date("dateCancelled", data.get("dateCancelled")),
        "date_next_process": parse_date("dateNextProcess", data.get("dateNextProcess")),
        "date_retain_until": parse_date("dateRetainUntil", data.get("dateRetainUntil")),
        "retries_remaining": _int_field(data, "retriesRemaining", minimum=0, nullable=True),
        "retry_interval": retry_ms / 1000,
        "retain_for": None if retain_ms == -1 else retain_ms / 1000,
        "attempts": _int_field(data, "attempts", minimum=0, nullable=False) or 0,
        "node_identity": _str_field(data, "nodeIdentity", nullable=True),
        "progress": None if progress is None else float(progress),
        "idempotency_key": _str_field(data, "idempotencyKey", nullable=True),
    }
