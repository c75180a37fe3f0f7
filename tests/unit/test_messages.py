"""The pipe messages' wire form: plain tagged tuples, and garbage refused as garbage."""

from __future__ import annotations

import pickle

import pytest

from taskengine import models
from taskengine.pool import messages

ERROR = models.TaskError(type="ValueError", message="bad", traceback="tb")


@pytest.mark.parametrize(
    "message",
    [
        messages.Run("a" * 32, "kind", 3, b"\x80\x05N."),
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
    wire = pickle.loads(messages.encode(messages.Run("id", "kind", 1, b"p")))
    assert type(wire) is tuple
    assert wire == (0, "id", "kind", 1, b"p")


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
        messages.decode_to_coordinator(messages.encode(messages.Run("id", "kind", 1, b"p")))
