"""The pipe messages' wire form: plain tagged tuples, and garbage refused as garbage."""

from __future__ import annotations

import multiprocessing
import pickle

import pytest

from taskengine.core import models
from taskengine.pool import messages

ERROR = models.TaskError(type="ValueError", message="bad", traceback="tb")


@pytest.mark.parametrize(
    "message",
    [
        messages.Run("a" * 32, "kind", 3, b"\x80\x05N.", 1),
        messages.Stop(),
    ],
)
def test_coordinator_messages_round_trip(message: messages.ToWorker) -> None:
    decoded = messages.decode_to_worker(messages.encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


@pytest.mark.parametrize(
    "message",
    [
        messages.Ready(1234),
        messages.InitFailed(ERROR),
        messages.Progress("a" * 32, 0.5, None),
        messages.Done("a" * 32, b"result", None, 0.25),
        messages.Done("a" * 32, None, ERROR, 0.25),
        messages.ShutdownFailed(ERROR),
    ],
)
def test_worker_messages_round_trip(message: messages.ToCoordinator) -> None:
    decoded = messages.decode_to_coordinator(messages.encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


def test_the_wire_form_is_a_plain_tuple() -> None:
    wire = pickle.loads(messages.encode(messages.Run("id", "kind", 1, b"p", 7)))
    assert type(wire) is tuple
    assert wire == (0, "id", "kind", 1, b"p", 7)


@pytest.mark.parametrize(
    "garbage",
    [
        pickle.dumps("not a tuple"),
        pickle.dumps(()),
        pickle.dumps(("0", "id")),
        pickle.dumps((True, "id", None, None, 0.0)),
        pickle.dumps((9, "id")),
        pickle.dumps((-1, "id")),
        pickle.dumps((3, "id", None)),  # a Done with too few fields
    ],
)
def test_a_foreign_object_is_refused(garbage: bytes) -> None:
    with pytest.raises(TypeError):
        messages.decode_to_coordinator(garbage)


def test_a_coordinator_message_is_not_a_worker_message() -> None:
    # Tags are per direction: a Run read by the coordinator would be a Ready, so lengths differ.
    with pytest.raises(TypeError):
        messages.decode_to_coordinator(messages.encode(messages.Run("id", "kind", 1, b"p", 1)))


@pytest.mark.parametrize(
    "size", [0, messages.SEPARATE_BLOB_BYTES - 1, messages.SEPARATE_BLOB_BYTES]
)
def test_a_blob_of_any_size_crosses_a_pipe_in_its_own_frame_or_inline(size: int) -> None:
    parent, child = multiprocessing.Pipe(duplex=True)
    try:
        blob = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        messages.send(parent, messages.Run("id", "kind", 2, blob, 1))
        assert messages.receive_to_worker(child) == messages.Run("id", "kind", 2, blob, 1)
        messages.send(child, messages.Done("id", blob, None, 0.5))
        assert messages.receive_to_coordinator(parent) == messages.Done("id", blob, None, 0.5)
        messages.send(child, messages.Ready(7))  # the next message is read as such
        assert messages.receive_to_coordinator(parent) == messages.Ready(7)
    finally:
        parent.close()
        child.close()


def test_a_blob_frame_of_the_wrong_length_is_garbled() -> None:
    parent, child = multiprocessing.Pipe(duplex=True)
    try:
        child.send_bytes(pickle.dumps((3, "id", 10, None, 0.5)))  # a Done announcing 10 bytes
        child.send_bytes(b"short")
        with pytest.raises(messages.GarbledMessage):
            messages.receive_to_coordinator(parent)
        child.send_bytes(b"\x00not a pickle")
        with pytest.raises(messages.GarbledMessage):
            messages.receive_to_coordinator(parent)
    finally:
        parent.close()
        child.close()


def test_a_message_whose_blob_follows_is_not_a_whole_message() -> None:
    with pytest.raises(TypeError):
        messages.decode_to_coordinator(pickle.dumps((3, "id", 10, None, 0.5)))


def test_the_pipe_ending_between_a_message_and_its_blob_is_an_eof() -> None:
    parent, child = multiprocessing.Pipe(duplex=True)
    try:
        child.send_bytes(pickle.dumps((3, "id", 10, None, 0.5)))
        child.close()
        with pytest.raises(EOFError):
            messages.receive_to_coordinator(parent)
    finally:
        parent.close()
