"""How an attempt ended when its worker did not report a result: the task error to record.

Crash messages name the signal or exit code (as loky's ``TerminatedWorkerError`` does), so that
a user reading ``task.error`` can tell a SIGKILL from ``os._exit(3)`` from a timeout.
"""

from __future__ import annotations

import signal

from taskengine.core import errors, handlers, models
from taskengine.pool import process

__all__ = ["describe_exit", "exit_error"]

Reason = process.KillReason


def describe_exit(exitcode: int | None) -> str:
    """Name how a process ended: a signal by name, or its exit code."""
    if exitcode is None:
        return "an unknown status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"signal {-exitcode} ({name})"
    return f"code {exitcode}"


def exit_error(
    *,
    pid: int,
    attempt: int,
    reason: process.KillReason | None,
    was_starting: bool,
    exitcode: int | None,
    spec: handlers.HandlerSpec,
    start_timeout: float,
) -> models.TaskError:
    """The error of the attempt that was running when worker ``pid`` ended."""
    how = describe_exit(exitcode)
    crashed = errors.WorkerCrashedError
    if reason is Reason.TIMEOUT:
        return models.TaskError.of(
            errors.TaskTimeoutError,
            f"attempt {attempt} ran longer than execution_timeout={spec.execution_timeout}s; "
            f"worker {pid} was killed",
        )
    if reason is Reason.START_TIMEOUT:
        return models.TaskError.of(
            errors.WorkerInitError, f"worker {pid} did not finish starting within {start_timeout}s"
        )
    if reason is Reason.STOP:
        return models.TaskError.of(
            crashed,
            f"the engine stopped before attempt {attempt} finished; worker {pid} was killed",
        )
    if reason is Reason.TERMINATED:
        return models.TaskError.of(crashed, f"worker {pid} was terminated on request")
    if was_starting:
        return models.TaskError.of(
            crashed,
            f"worker {pid} exited with {how} while starting (importing {spec.module} or "
            "running its initialise method)",
        )
    if exitcode is not None and exitcode < 0:
        return models.TaskError.of(
            crashed, f"worker {pid} was killed by {how} during attempt {attempt}"
        )
    return models.TaskError.of(
        crashed, f"worker {pid} exited with {how} before returning a result (attempt {attempt})"
    )
