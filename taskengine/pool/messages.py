"""Messages between the coordinator and a worker, one pipe per worker.

Plain ``NamedTuple``s: they pickle fast and carry only bytes, strings, numbers and ``TaskError``
data.  Payloads and results stay encoded blobs end to end, so the coordinator's reader never
unpickles a user object and a broken user object can never break the pipe protocol.

Framing.  A message is one frame of ``Connection.send_bytes``, except a ``Run`` or ``Done``
whose blob is at least ``SEPARATE_BLOB_BYTES`` long: its frame carries the blob's length in the
blob's place, and the blob itself follows as the next frame, sent straight from the blob and
received as a ``bytes`` object of its own.  Pickling the blob into the message would copy it
once more on each side, and unpickling it out of the received frame once more again.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from multiprocessing.connection import Connection
from typing import Any, Final, NamedTuple, TypeVar

from taskengine.core import models

__all__ = [
    "SEPARATE_BLOB_BYTES",
    "Done",
    "GarbledMessage",
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
    "receive_to_coordinator",
    "receive_to_worker",
    "send",
]

#: Blobs this long or longer travel as a frame of their own.  Above ``pool.PREFETCH_BYTES``, so
#: a split Run is never prefetched: it goes only to a worker that is reading.
SEPARATE_BLOB_BYTES: Final = 64 * 1024


class Run(NamedTuple):
    """Coordinator -> worker: run one attempt."""

    task_id: str
    task_type: str
    attempt: int
    payload_blob: bytes
    #: This worker's number for the attempt (1, 2, ...), the key of its revocation ledger;
    #: inline execution, which has no ledger, passes 0.
    seq: int


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
_Message = TypeVar("_Message", ToWorker, ToCoordinator)


#: Wire tags: a message travels as the plain tuple ``(tag, *fields)``.
_TO_WORKER: Final[tuple[type[ToWorker], ...]] = (Run, Stop)
_TO_COORDINATOR: Final[tuple[type[ToCoordinator], ...]] = (
    Ready,
    InitFailed,
    Progress,
    Done,
    ShutdownFailed,
)
_TAGS: Final[dict[type, int]] = {
    kind: tag for kinds in (_TO_WORKER, _TO_COORDINATOR) for tag, kind in enumerate(kinds)
}
#: Position of the blob field that may travel as a frame of its own, among the message's fields.
_BLOB_FIELD: Final[dict[type, int]] = {Run: 3, Done: 1}


class GarbledMessage(Exception):
    """What arrived on the pipe is not a message (the cause is chained)."""


def encode(message: ToWorker | ToCoordinator) -> bytes:
    """The bytes of one message on the pipe.

    A plain tuple of the message's tag and fields, pickled: a named tuple pickles by class
    reference, which costs several times as much both ways on the round trip of a short task
    (and ``Connection.send``'s ForkingPickler adds a buffer and a pickler object per message;
    these messages hold no file descriptors that would need it).
    """
    return pickle.dumps((_TAGS[type(message)], *message), pickle.HIGHEST_PROTOCOL)


def send(conn: Connection, message: ToWorker | ToCoordinator) -> None:
    """Write ``message`` to ``conn``: one frame, or two when its blob travels apart.

    Raises:
        OSError, ValueError: the pipe is broken or closed.
    """
    field = _BLOB_FIELD.get(type(message))
    blob = None if field is None else message[field]
    if field is None or not isinstance(blob, bytes) or len(blob) < SEPARATE_BLOB_BYTES:
        conn.send_bytes(encode(message))
        return
    announced = (_TAGS[type(message)], *message[:field], len(blob), *message[field + 1 :])
    conn.send_bytes(pickle.dumps(announced, pickle.HIGHEST_PROTOCOL))
    # send_bytes writes a large buffer through a memoryview: the blob is not copied.
    conn.send_bytes(blob)


def receive_to_worker(conn: Connection) -> ToWorker:
    """Read the coordinator's next message from ``conn``.

    Raises:
        EOFError, OSError: the pipe ended or broke (also between a message and its blob).
        GarbledMessage: the bytes are not a message.
    """
    return _receive(conn, _TO_WORKER)


def receive_to_coordinator(conn: Connection) -> ToCoordinator:
    """Read a worker's next message from ``conn``.

    Raises:
        EOFError, OSError, ValueError: the pipe ended, broke or was closed (also between a
            message and its blob).
        GarbledMessage: the bytes are not a message.
    """
    return _receive(conn, _TO_COORDINATOR)


def _receive(conn: Connection, kinds: tuple[type[_Message], ...]) -> _Message:
    data = conn.recv_bytes()
    try:
        parsed = _parse(data, kinds)
    except Exception as exc:
        raise GarbledMessage(str(exc)) from exc
    kind, fields, field = parsed
    if field is None:
        return kind._make(fields)
    size = fields[field]
    blob = _receive_blob(conn, size)
    if len(blob) != size:
        raise GarbledMessage(f"a {kind.__name__} announced {size} bytes of blob, {len(blob)} came")
    whole = list(fields)
    whole[field] = blob
    return kind._make(whole)


def _receive_blob(conn: Connection, size: int) -> bytes:
    """The next frame of ``conn`` (a ``send_bytes`` frame), expected to be ``size`` bytes long.

    A frame of the expected length is read straight into one buffer of its final size.
    ``Connection.recv_bytes`` grows its buffer as the bytes come, each growth a copy while the
    buffer is small enough to live on the heap, and the allocator then keeps much of what was
    freed: about a fifth of a copy of a large blob stayed in the receiver's RSS for good.  A
    frame of another length is read the ordinary way (the caller reports it as garbled).

    Raises:
        EOFError, OSError: the pipe ended, broke or was closed.
    """
    fd = conn.fileno()
    (length,) = struct.unpack("!i", _read_exactly(fd, 4))
    if length == -1:  # send_bytes's header of a frame over 2 GiB
        (length,) = struct.unpack("!Q", _read_exactly(fd, 8))
    if length != size:
        return _read_exactly(fd, length)
    return _read_exactly(fd, size)


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, read into one buffer allocated once.

    Raises:
        EOFError: the pipe ended first.
    """
    buffer = io.BytesIO()
    if size:
        buffer.seek(size - 1)
        buffer.write(b"\0")  # the whole buffer at once, no growth on the way
    filled = 0
    with buffer.getbuffer() as view:
        while filled < size:
            count = os.readv(fd, [view[filled:]])
            if count == 0:
                raise EOFError("the pipe ended inside a frame")
            filled += count
    return buffer.getvalue()  # the buffer itself (no export is left), trimmed to size


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
    kind, fields, field = _parse(data, kinds)
    if field is not None:
        raise TypeError("a message whose blob follows in its own frame (read it with receive_*)")
    return kind._make(fields)


def _parse(
    data: bytes, kinds: tuple[type[_Message], ...]
) -> tuple[type[_Message], tuple[Any, ...], int | None]:
    """The kind and fields of the message in ``data``, and which field's blob follows, if one.

    Raises:
        Exception: whatever unpickling garbage raises; TypeError for anything but a message.
    """
    wire = pickle.loads(data)
    if not isinstance(wire, tuple) or not wire or type(wire[0]) is not int:
        raise TypeError(f"not a pipe message: {type(wire).__name__}")
    tag = wire[0]
    if not 0 <= tag < len(kinds):
        raise TypeError(f"unknown pipe message tag {tag}")
    kind = kinds[tag]
    if len(wire) != len(kind._fields) + 1:
        raise TypeError(f"a {kind.__name__} message with {len(wire) - 1} field(s)")
    fields = wire[1:]
    field = _BLOB_FIELD.get(kind)
    # A blob that travels apart is announced by its length (an int) in its own place.
    if field is None or type(fields[field]) is not int:
        return kind, fields, None
    return kind, fields, field
