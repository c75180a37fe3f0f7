"""The error tree of taskengine: every error the package raises on purpose.

Attempt failures (``WorkerCrashedError``, ``TaskTimeoutError``, ``WorkerInitError``) are mostly
*recorded* on a task as ``TaskError`` data rather than raised; their class names are what
``TaskError.type`` holds.  Nothing here imports any other taskengine module.
"""

from __future__ import annotations

__all__ = [
    "EngineStoppedError",
    "HandlerNotFoundError",
    "SchemaVersionError",
    "StoreError",
    "TaskEngineError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "TaskValidationError",
    "WorkerCrashedError",
    "WorkerInitError",
]

#: Longest repr of a bad value quoted in an error message; longer ones are cut.
MAX_VALUE_REPR = 80


def short_repr(value: object, limit: int = MAX_VALUE_REPR) -> str:
    """Return a repr of ``value`` cut to ``limit`` characters, never raising.

    Error messages quote user values; a 1 MB string or an object whose ``__repr__`` raises must
    not turn a validation error into a different failure.
    """
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not mask the real error
        text = f"<{type(value).__name__} object>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class TaskEngineError(Exception):
    """Root of every error taskengine raises on purpose."""


class TaskValidationError(TaskEngineError, ValueError):
    """An argument was rejected; nothing was stored.

    Attributes:
        argument: the name of the offending argument.
        value: the rejected value.
    """

    def __init__(self, argument: str, value: object, reason: str) -> None:
        self.argument = argument
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {argument}={short_repr(value)}: {reason}")


class TaskNotFoundError(TaskEngineError, LookupError):
    """``wait`` was called with an id that is not known to the engine."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no task with id {short_repr(task_id)}")


class HandlerNotFoundError(TaskEngineError, LookupError):
    """A handler module cannot be found, or a task type has no registered handler."""


class EngineStoppedError(TaskEngineError, RuntimeError):
    """A method was called on an engine after ``stop()``."""


class StoreError(TaskEngineError):
    """The persistence backend failed; ``__cause__`` holds the driver's error."""


class SchemaVersionError(StoreError):
    """The database was written by a newer taskengine whose schema this code does not know."""


class WorkerCrashedError(TaskEngineError):
    """A worker process died during an attempt (signal, ``os._exit``, segfault, engine crash)."""


class TaskTimeoutError(TaskEngineError, TimeoutError):
    """An attempt ran longer than its ``execution_timeout``; its worker was killed."""


class WorkerInitError(TaskEngineError):
    """A worker could not start: importing the handler or ``initialise_method`` failed."""
