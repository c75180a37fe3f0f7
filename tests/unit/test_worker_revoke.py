"""The worker's side of Revoke: attempts that have not started go back, even mid-attempt.

The worker's serve loop runs on a thread of the test process, with a handler that blocks on an
event, so the test controls exactly which attempt runs while a Revoke arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

import pytest

from taskengine import codec
from taskengine.pool import messages, worker_main

CONFIG = worker_main.WorkerConfig(
    task_type="t",
    module="tests.handlers.basic",
    method="echo",
    initialise_method=None,
    shutdown_method=None,
    sys_path=(),
    environ=(),
)


class Blocking:
    """A handler whose calls with payload "hold" wait until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, payload: Any) -> Any:
        if payload == "hold":
            self.started.set()
            assert self.release.wait(10)
        return payload


@pytest.fixture
def worker() -> Iterator[tuple[Connection, Blocking]]:
    coordinator, child = Pipe(duplex=True)
    handler = Blocking()
    served = worker_main._Worker(child, CONFIG)
    served.handler = handler
    thread = threading.Thread(target=served.serve, daemon=True)
    thread.start()
    yield coordinator, handler
    handler.release.set()
    coordinator.send_bytes(messages.encode(messages.Stop()))
    thread.join(10)
    assert not thread.is_alive()
    coordinator.close()


def run(task_id: str, payload: Any) -> bytes:
    return messages.encode(messages.Run(task_id, "t", 1, codec.encode(payload)))


def receive(conn: Connection) -> messages.ToCoordinator:
    assert conn.poll(10), "the worker did not answer"
    return messages.decode_to_coordinator(conn.recv_bytes())


def test_a_revoke_mid_attempt_gives_back_the_newest_unstarted_attempts(
    worker: tuple[Connection, Blocking],
) -> None:
    conn, handler = worker
    for task_id, payload in [("a", "hold"), ("b", 1), ("c", 2), ("d", 3)]:
        conn.send_bytes(run(task_id, payload))
    assert handler.started.wait(10)
    conn.send_bytes(messages.encode(messages.Revoke(2)))
    # Answered while "a" still runs: the watcher thread reads the pipe.
    assert receive(conn) == messages.Revoked(("d", "c"))
    assert not handler.release.is_set()
    handler.release.set()
    done = [receive(conn) for _ in range(2)]
    assert [d.task_id for d in done if isinstance(d, messages.Done)] == ["a", "b"]
    assert not conn.poll(0.2)  # "c" and "d" never ran here


def test_a_revoke_asks_for_more_than_is_waiting(worker: tuple[Connection, Blocking]) -> None:
    conn, handler = worker
    conn.send_bytes(run("a", "hold"))
    conn.send_bytes(run("b", 1))
    assert handler.started.wait(10)
    conn.send_bytes(messages.encode(messages.Revoke(5)))
    assert receive(conn) == messages.Revoked(("b",))
    conn.send_bytes(messages.encode(messages.Revoke(1)))
    assert receive(conn) == messages.Revoked(())  # nothing left that has not started
    handler.release.set()
    assert isinstance(done := receive(conn), messages.Done)
    assert done.task_id == "a"


def test_a_revoke_while_idle_is_answered_empty(worker: tuple[Connection, Blocking]) -> None:
    conn, _ = worker
    conn.send_bytes(run("a", 1))
    assert isinstance(done := receive(conn), messages.Done)
    assert done.task_id == "a"
    conn.send_bytes(messages.encode(messages.Revoke(1)))
    assert receive(conn) == messages.Revoked(())
