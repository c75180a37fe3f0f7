"""Testing support (contract.md#testing): a fake clock, inline execution helpers, wait helpers.

* :class:`FakeClock` moves only when told to: inject it with ``TaskEngine(..., clock=clock)``
  and retry intervals, ``run_at``, retention and inline execution timeouts follow
  ``clock.advance(...)`` without any sleep.
* ``TaskEngine(MemoryStore(), execution="inline")`` runs handlers in the calling thread when
  ``engine.run_until_idle()`` is called; :func:`crash_worker` lets a handler simulate the death
  of its worker there (and really dies in a worker process).
* :func:`wait_all` waits (event-driven) for tasks to finish and raises the handlers' errors.
* ``taskengine.testing.strategies`` has hypothesis strategies (needs ``hypothesis``), and the
  pytest plugin ``taskengine.testing.pytest_plugin`` the ``engine``, ``inline_engine`` and
  ``fake_clock`` fixtures.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from datetime import timedelta

from taskengine.coordinator import engine, inline
from taskengine.core import context, models
from taskengine.core.clock import FakeClock

__all__ = ["FakeClock", "TaskFailedError", "crash_worker", "wait_all"]


class TaskFailedError(AssertionError):
    """A task that a test waited for did not succeed.

    Attributes:
        task: the final snapshot of the task (its ``error`` says what the handler raised).
    """

    def __init__(self, task: models.BackgroundTask) -> None:
        error = task.error
        detail = "" if error is None else f": {error.type}: {error.message}"
        trace = "" if error is None or error.traceback is None else f"\n{error.traceback}"
        super().__init__(f"task {task.id} ({task.type}) ended {task.status.value}{detail}{trace}")
        self.task = task


def wait_all(
    engine_: engine.TaskEngine,
    task_ids: Iterable[str],
    timeout: float | timedelta | None = 30.0,
    *,
    raise_on_failure: bool = True,
) -> list[models.BackgroundTask]:
    """Wait for every task to finish; return their final snapshots in the same order.

    On an inline engine, due attempts are run first (``run_until_idle``), so the call never
    blocks on work that nobody would run.

    Raises:
        TaskFailedError: a task failed or was cancelled (unless ``raise_on_failure`` is False).
        TimeoutError: a task did not finish within ``timeout`` seconds (each wait).
        TaskNotFoundError: an id is unknown.
    """
    ids = list(task_ids)
    if engine_.execution == "inline":
        engine_.run_until_idle()
    finals = [engine_.wait(task_id, timeout) for task_id in ids]
    if raise_on_failure:
        for task in finals:
            if task.status is not models.TaskStatus.SUCCESS:
                raise TaskFailedError(task)
    return finals


def crash_worker() -> None:
    """Make the calling handler's worker die as if SIGKILLed.

    In a worker process it really sends SIGKILL to the worker.  In an inline attempt it raises
    ``SimulatedCrash``, which the inline runner records as the same ``WorkerCrashedError``
    (and it discards the inline worker, so the next attempt initialises a fresh one).

    Raises:
        TaskEngineError: called outside a task handler.
    """
    context.current_task()  # outside a handler this raises, rather than killing the caller
    if inline.is_inline():
        raise context.SimulatedCrash()
    os.kill(os.getpid(), signal.SIGKILL)  # pragma: no cover - the process ends here
