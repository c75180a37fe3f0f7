"""The revocation ledger: an attempt in a worker's pipe is started there or taken back, never both.

The worker's serve loop runs on a thread of the test process, with a handler that blocks on an
event, so the test controls exactly which attempt runs while the coordinator's side takes
attempts back.  The worker takes no part in a take-back: the handler keeps running throughout.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from taskengine.core import codec
from taskengine.pool import ledger, messages, worker_main
from tests.conftest import until

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


Worker = tuple[Connection, Blocking, ledger.RevocationLedger]


@pytest.fixture
def worker() -> Iterator[Worker]:
    context = multiprocessing.get_context("forkserver")
    coordinator, child = context.Pipe(duplex=True)
    book = ledger.RevocationLedger()
    handler = Blocking()
    served = worker_main._Worker(child, CONFIG, book)
    served.handler = handler
    thread = threading.Thread(target=served.serve, daemon=True)
    thread.start()
    yield coordinator, handler, book
    handler.release.set()
    messages.send(coordinator, messages.Stop())
    thread.join(10)
    assert not thread.is_alive()
    coordinator.close()


def send_runs(conn: Connection, *runs: tuple[str, Any, int]) -> None:
    for task_id, payload, seq in runs:
        messages.send(conn, messages.Run(task_id, "t", 1, codec.encode(payload), seq))


def finished(conn: Connection, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        assert conn.poll(10), "the worker did not answer"
        message = messages.receive_to_coordinator(conn)
        assert isinstance(message, messages.Done)
        ids.append(message.task_id)
    return ids


def test_attempts_taken_back_mid_attempt_are_skipped(worker: Worker) -> None:
    conn, handler, book = worker
    send_runs(conn, ("a", "hold", 1), ("b", 1, 2), ("c", 2, 3), ("d", 3, 4))
    assert handler.started.wait(10)
    # While "a" holds the worker's only thread, the two newest are taken back.
    assert book.take_back([4, 3, 2], 2, timeout=1.0) == [4, 3]
    handler.release.set()
    assert finished(conn, 2) == ["a", "b"]
    assert not conn.poll(0.2)  # "c" and "d" never ran here


def test_a_started_attempt_cannot_be_taken_back(worker: Worker) -> None:
    conn, handler, book = worker
    send_runs(conn, ("a", "hold", 1), ("b", 1, 2))
    assert handler.started.wait(10)
    # "a" (1) started: taking back stops at it, whatever is asked for.
    assert book.take_back([2, 1], 5, timeout=1.0) == [2]
    assert book.take_back([1], 1, timeout=1.0) == []
    handler.release.set()
    assert finished(conn, 1) == ["a"]
    send_runs(conn, ("e", 5, 3))  # later attempts run as usual
    assert finished(conn, 1) == ["e"]


def test_take_back_gives_up_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    book = ledger.RevocationLedger()
    holder = multiprocessing.get_context("forkserver").Process(
        target=_hold_lock, args=(book, str(tmp_path / "held"), str(tmp_path / "done"))
    )
    holder.start()
    try:
        until(lambda: (tmp_path / "held").exists())
        assert book.take_back([3, 2], 2, timeout=0.05) == []
    finally:
        (tmp_path / "done").touch()
        holder.join(10)
    assert book.take_back([3, 2], 2, timeout=0.05) == [3, 2]
    assert not book.start(3)
    assert book.start(1)


def test_a_killed_holder_does_not_block_the_coordinator(tmp_path: Path) -> None:
    book = ledger.RevocationLedger()
    holder = multiprocessing.get_context("forkserver").Process(
        target=_hold_lock, args=(book, str(tmp_path / "held"), str(tmp_path / "never"))
    )
    holder.start()
    until(lambda: (tmp_path / "held").exists())
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    assert book.take_back([2], 1, timeout=1.0) == [2]


def _hold_lock(book: ledger.RevocationLedger, held: str, done: str) -> None:
    fcntl.lockf(book._fd, fcntl.LOCK_EX)
    Path(held).touch()
    deadline = time.monotonic() + 20
    while not Path(done).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
