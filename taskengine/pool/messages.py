"""Messages between the coordinator and a worker, one pipe per worker.

Plain ``NamedTuple``s: they pickle fast and carry only bytes, strings, numbers and ``TaskError``
data.  Payloads and results stay encoded blobs end to end, so the coordinator's reader never
unpickles a user object and a broken user object can never break the pipe protocol.
"""

from __future__ import annotations

import pickle
from typing import Final, NamedTuple, TypeVar

from taskengine import models

__all__ = [
    "Done",
    "InitFailed",
    "Progress",
    "Ready",
    "Revoke",
    "Revoked",
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


class Revoke(NamedTuple):
    """Coordinator -> worker: give back up to ``most`` queued attempts that have not started.

    The worker answers with :class:`Revoked`, naming the attempts it gave back, newest first
    (possibly none: it may have started them meanwhile).  This is how an idle worker takes
    attempts that were prefetched into a busy worker's pipe.
    """

    most: int


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


class Revoked(NamedTuple):
    """Worker -> coordinator: the answer to :class:`Revoke`; these attempts will not run here."""

    task_ids: tuple[str, ...]


class ShutdownFailed(NamedTuple):
    """Worker -> coordinator: ``shutdown_method`` raised (the worker exits anyway)."""

    error: models.TaskError


ToWorker = Run | Stop | Revoke
ToCoordinator = Ready | InitFailed | Progress | Done | ShutdownFailed | Revoked
_Message = TypeVar("_Message", ToWorker, ToCoordinator)


#: Wire tags: a message travels as the plain tuple ``(tag, *fields)``.
_TO_WORKER: Final[tuple[type[ToWorker], ...]] = (Run, Stop, Revoke)
_TO_COORDINATOR: Final[tuple[type[ToCoordinator], ...]] = (
    Ready,
    InitFailed,
    Progress,
    Done,
    ShutdownFailed,
    Revoked,
)
_TAGS: Final[dict[type, int]] = {
    kind: tag for kinds in (_TO_WORKER, _TO_COORDINATOR) for tag, kind in enumerate(kinds)
}


def encode(message: ToWorker | ToCoordinator) -> bytes:
    """The bytes of one message on the pipe.

    A plain tuple of the message's tag and fields, pickled: a named tuple pickles by class
    reference, which costs several times as much both ways on the round trip of a short task
    (and ``Connection.send``'s ForkingPickler adds a buffer and a pickler object per message;
    these messages hold no file descriptors that would need it).
    """
    return pickle.dumps((_TAGS[type(message)], *message), pickle.HIGHEST_PROTOCOL)


def decode_to_worker(data: bytes) -> ToWorker:
    """The coordinator's message in ``data``.

    Raises:
        Exception: whatever unpickling garbage raises; TypeError for anything but a message.
    """
    return _decode(data, _TO_WORKER)


def decode_to_coordinator(data: bytes) -> ToCoordinator:
    """A worker's message in ``data``.

    Raises:
        Exception: whatever unpickling garbage raises; TypeError for anything but a message.
    """
    return _decode(data, _TO_COORDINATOR)


def _decode(data: bytes, kinds: tuple[type[_Message], ...]) -> _Message:
    wire = pickle.loads(data)
    if not isinstance(wire, tuple) or not wire or type(wire[0]) is not int:
        raise TypeError(f"not a pipe message: {type(wire).__name__}")
    tag = wire[0]
    if not 0 <= tag < len(kinds):
        raise TypeError(f"unknown pipe message tag {tag}")
    kind = kinds[tag]
    if len(wire) != len(kind._fields) + 1:
        raise TypeError(f"a {kind.__name__} message with {len(wire) - 1} field(s)")
    return kind._make(wire[1:])
