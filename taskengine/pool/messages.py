"""Messages between the coordinator and a worker, one pipe per worker.

Plain ``NamedTuple``s: they pickle fast and carry only bytes, strings, numbers and ``TaskError``
data.  Payloads and results stay encoded blobs end to end, so the coordinator's reader never
unpickles a user object and a broken user object can never break the pipe protocol.
"""

from __future__ import annotations

import pickle
from typing import NamedTuple, cast

from taskengine import models

__all__ = [
    "Done",
    "InitFailed",
    "Progress",
    "Ready",
    "Run",
    "ShutdownFailed",
    "Stop",
    "ToCoordinator",
    "ToWorker",
    "decode_to_coordinator",
    "decode_to_worker",
    "encode",
]


class Run(NamedTuple):
    """Coordinator -> worker: run one attempt."""

    task_id: str
    task_type: str
    attempt: int
    payload_blob: bytes


class Stop(NamedTuple):
    """Coordinator -> worker: run the shutdown method and exit."""


class Ready(NamedTuple):
    """Worker -> coordinator: the handler is imported and initialised."""

    pid: int


class InitFailed(NamedTuple):
    """Worker -> coordinator: importing the handler or ``initialise_method`` failed."""

    error: models.TaskError


class Progress(NamedTuple):
    """Worker -> coordinator: the handler reported progress."""

    task_id: str
    fraction: float
    message: str | None


class Done(NamedTuple):
    """Worker -> coordinator: the attempt ended; exactly one of result_blob / error is set."""

    task_id: str
    result_blob: bytes | None
    error: models.TaskError | None
    #: Seconds the attempt took inside the worker (decode, handler, encode).
    run_seconds: float


class ShutdownFailed(NamedTuple):
    """Worker -> coordinator: ``shutdown_method`` raised (the worker exits anyway)."""

    error: models.TaskError


ToWorker = Run | Stop
ToCoordinator = Ready | InitFailed | Progress | Done | ShutdownFailed


def encode(message: ToWorker | ToCoordinator) -> bytes:
    """The bytes of one message on the pipe.

    Plain pickle rather than ``Connection.send``'s ForkingPickler: the messages hold no file
    descriptors or sockets, and skipping its per-message buffer and pickler object is measurable
    on the round trip of a short task.
    """
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def decode_to_worker(data: bytes) -> ToWorker:
    """The coordinator's message in ``data``.

    Raises:
        Exception: whatever unpickling garbage raises; TypeError for a foreign object.
    """
    return cast(ToWorker, _checked(pickle.loads(data), (Run, Stop)))


def decode_to_coordinator(data: bytes) -> ToCoordinator:
    """A worker's message in ``data``.

    Raises:
        Exception: whatever unpickling garbage raises; TypeError for a foreign object.
    """
    kinds = (Ready, InitFailed, Progress, Done, ShutdownFailed)
    return cast(ToCoordinator, _checked(pickle.loads(data), kinds))


def _checked(message: object, kinds: tuple[type, ...]) -> object:
    if not isinstance(message, kinds):
        raise TypeError(f"not a pipe message: {type(message).__name__}")
    return message
