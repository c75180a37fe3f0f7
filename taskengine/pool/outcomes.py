"""How attempts ended, as plain values, and the task error of an attempt whose worker died.

Crash messages name the signal or exit code (as loky's ``TerminatedWorkerError`` does), so that
a user reading ``task.error`` can tell a SIGKILL from ``os._exit(3)`` from a timeout.
"""

from __future__ import annotations

import signal

import attrs

from taskengine.core import errors, handlers, models
from taskengine.pool import process

__all__ = [
    "Failed",
    "Finished",
    "Outcome",
    "Progressed",
    "Unstarted",
    "describe_exit",
    "exit_error",
]

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


# -- what the supervisor reports: plain values, turned into task changes by the coordinator --


@attrs.frozen
class Finished:
    """The handler returned (``result_blob``) or raised (``error``) for ``task``'s attempt."""

    task: models.BackgroundTask
    result_blob: bytes | None
    error: models.TaskError | None


@attrs.frozen
class Failed:
    """``task``'s attempt ended without a result from its handler: ``error`` says why."""

    task: models.BackgroundTask
    error: models.TaskError


@attrs.frozen
class Unstarted:
    """``task`` was handed to a worker that will never run it: it goes back uncounted."""

    task: models.BackgroundTask


@attrs.frozen
class Progressed:
    """The handler of ``task``'s running attempt reported its progress."""

    task: models.BackgroundTask
    fraction: float
    message: str | None


#: Everything the supervisor reports about the attempts it was given.
Outcome = Finished | Failed | Unstarted | Progressed
