"""Value types of the public API: tasks, task errors, statuses and query results.

All are frozen attrs classes; changes go through ``attrs.evolve`` (see ``transitions.py``).
A task keeps its payload and result as encoded blobs (``codec.py``) so that every store, the
memory one included, holds exactly the same bytes, a caller's later mutation of a payload has no
effect, and the coordinator never unpickles user objects it only passes along.
"""

from __future__ import annotations

import builtins
import traceback as traceback_module
from datetime import datetime
from typing import Any

import attrs

from taskengine.core import codec, errors, jsonform
from taskengine.core.states import SortDirection, TaskStatus

__all__ = [
    "BackgroundTask",
    "QueryResult",
    "SortDirection",
    "TaskError",
    "TaskStatus",
]

#: Longest error message kept from a handler's exception.
MAX_ERROR_MESSAGE = 4_000
#: Longest traceback text kept.
MAX_TRACEBACK = 20_000
#: How many ``__cause__``/``__context__`` links are followed.
MAX_CAUSE_DEPTH = 5


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "... [truncated]"


@attrs.frozen(kw_only=True)
class TaskError:
    """A failed attempt's error, as plain data (never a live exception).

    Attributes:
        type: the exception class name, e.g. ``"ValueError"`` or ``"WorkerCrashedError"``.
        message: ``str(exception)``, truncated.
        traceback: the formatted traceback text, or None when there is none (a crash).
        cause: the error this one was raised from, if any.
    """

    type: str
    message: str
    traceback: str | None = None
    cause: TaskError | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, _depth: int = 0) -> TaskError:
        """Describe ``exc`` (and its cause chain) with strings only."""
        try:
            message = str(exc)
        except Exception:  # a broken __str__ must not lose the error itself
            message = f"<unprintable {type(exc).__name__}>"
        try:
            tb_text: str | None = "".join(
                traceback_module.format_exception(type(exc), exc, exc.__traceback__, chain=False)
            )
        except Exception:
            tb_text = None
        cause_exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        cause = None
        if cause_exc is not None and _depth < MAX_CAUSE_DEPTH:
            cause = cls.from_exception(cause_exc, _depth + 1)
        return cls(
            type=type(exc).__name__,
            message=_cut(message, MAX_ERROR_MESSAGE),
            traceback=None if tb_text is None else _cut(tb_text, MAX_TRACEBACK),
            cause=cause,
        )

    @classmethod
    def of(cls, error_type: builtins.type[BaseException], message: str) -> TaskError:
        """Build an error raised by the engine itself (crash, timeout), with no traceback."""
        return cls(type=error_type.__name__, message=message)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form: ``{"type", "message", "traceback", "cause"}``."""
        return jsonform.error_to_json(self)

    @classmethod
    def from_json(cls, data: object, field: str = "error") -> TaskError:
        """Build an error from its JSON form; ``TaskValidationError`` names the bad field."""
        return cls.from_fields(jsonform.error_fields_from_json(data, field))

    @classmethod
    def from_fields(cls, fields: jsonform.ErrorFields) -> TaskError:
        """Build an error (and its causes) from the checked fields of its JSON form."""
        cause = fields["cause"]
        return cls(
            type=fields["type"],
            message=fields["message"],
            traceback=fields["traceback"],
            cause=None if cause is None else cls.from_fields(cause),
        )


@attrs.frozen(kw_only=True)
class BackgroundTask:
    """One task's record (contract.md#task-model).

    ``payload`` and ``result`` are decoded from their blobs on every access, so each access
    returns a fresh copy.  A blob that cannot be decoded (written by another Python version,
    edited by hand, its class missing here) raises ``StoreError`` naming the task and the reason;
    every other field of the task stays readable.
    """

    id: str
    type: str
    status: TaskStatus
    payload_blob: bytes = attrs.field(repr=False)
    result_blob: bytes | None = attrs.field(default=None, repr=False)
    error: TaskError | None = None
    date_created: datetime
    date_modified: datetime
    date_completed: datetime | None = None
    date_cancelled: datetime | None = None
    date_next_process: datetime | None = None
    date_retain_until: datetime | None = None
    retries_remaining: int | None = None
    retry_interval: float = 5.0
    retain_for: float | None = 0.0
    attempts: int = 0
    node_identity: str | None = None
    progress: float | None = None
    idempotency_key: str | None = None

    @property
    def payload(self) -> Any:
        """The payload given to ``create`` (a fresh copy on every access)."""
        return self._decode(self.payload_blob, "payload")

    @property
    def result(self) -> Any:
        """The handler's return value once the task succeeded, else None."""
        if self.result_blob is None:
            return None
        return self._decode(self.result_blob, "result")

    def _decode(self, blob: bytes, what: str) -> Any:
        try:
            return codec.decode(blob)
        except Exception as exc:
            raise errors.StoreError(
                f"the {what} of task {self.id} cannot be decoded: {type(exc).__name__}: {exc}"
            ) from exc

    def to_json(self) -> dict[str, Any]:
        """Return the TWIN JSON form (camelCase names, ISO dates, millisecond durations)."""
        return jsonform.task_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackgroundTask:
        """Build a task from its TWIN JSON form; ``TaskValidationError`` if it is malformed."""
        fields = jsonform.task_fields_from_json(data)
        error = fields.pop("error")
        return cls(**fields, error=None if error is None else TaskError.from_fields(error))


@attrs.frozen(kw_only=True)
class QueryResult:
    """One page of a query.

    Attributes:
        entities: the tasks of this page, in the requested order.
        cursor: pass it to the next ``query`` call for the following page; None on the last page.
    """

    entities: list[BackgroundTask]
    cursor: str | None = None
