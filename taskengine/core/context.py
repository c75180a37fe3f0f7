"""``current_task()``: what handler code can learn about the attempt it runs in.

The worker sets a context variable around each handler call; nothing here is global state of the
engine.  Progress reports travel to the coordinator over the worker's pipe.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable

import attrs

from taskengine.core import errors

__all__ = ["SimulatedCrash", "TaskContext", "current_task"]


class SimulatedCrash(BaseException):
    """Raised by ``taskengine.testing.crash_worker()`` inside an inline attempt.

    The worker code never turns it into a handler error: the inline runner treats it as the
    death of its worker (``WorkerCrashedError``), as a process pool treats a SIGKILL.
    """


@attrs.frozen(kw_only=True)
class TaskContext:
    """The running attempt, as seen from inside its handler.

    Attributes:
        id: the task's id.
        type: the task's type.
        attempt: the number of this attempt (1 for the first).
    """

    id: str
    type: str
    attempt: int
    _reporter: Callable[[float, str | None], None] = attrs.field(repr=False, alias="reporter")

    def report_progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the attempt has got, as a fraction in 0.0..1.0.

        The latest value shows up as ``BackgroundTask.progress``.

        Raises:
            TaskValidationError: ``fraction`` is not a finite number in 0..1, or ``message`` is
                not a str.
        """
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not math.isfinite(fraction)
            or not 0.0 <= fraction <= 1.0
        ):
            raise errors.TaskValidationError("fraction", fraction, "expected a number in 0..1")
        if message is not None and not isinstance(message, str):
            raise errors.TaskValidationError("message", message, "expected a str or None")
        self._reporter(float(fraction), message)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "taskengine_current_task", default=None
)


def current_task() -> TaskContext:
    """Return the attempt the calling handler runs in.

    Raises:
        TaskEngineError: when called outside a handler.
    """
    context = _current.get()
    if context is None:
        raise errors.TaskEngineError("current_task() is only available inside a task handler")
    return context


def set_current(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    """Install ``context`` for the running handler (used by the worker)."""
    return _current.set(context)


def reset_current(token: contextvars.Token[TaskContext | None]) -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)
