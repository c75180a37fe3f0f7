"""SqliteStore commits: claims alone at synchronous NORMAL, the rest at FULL; group commit of
``insert_many`` callers on several threads (each keeps its own ids and its own error)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskengine.core import codec, errors, models, transitions
from taskengine.stores import base
from taskengine.stores.sqlite.store import SqliteStore

from .factories import NODE, Status, at, claimer, new

#: ``PRAGMA synchronous`` answers.
NORMAL, FULL = 1, 2


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    instance = SqliteStore(tmp_path / "tasks.db")
    instance.open()
    try:
        yield instance
    finally:
        instance.close()


def writer_of(store: SqliteStore) -> sqlite3.Connection:
    conn = store._writer  # the connection every commit goes through
    assert conn is not None
    return conn


def level(store: SqliteStore) -> int:
    """The writer's level now: a commit runs at the level it was left at (set before BEGIN)."""
    return int(writer_of(store).execute("PRAGMA synchronous").fetchone()[0])


def succeeded(task: models.BackgroundTask) -> base.Update:
    done = transitions.succeed(task, codec.encode(1), at(20))
    return base.Update(
        task=done, expected_status=Status.PROCESSING, expected_attempts=task.attempts
    )


def test_claims_alone_commit_at_normal_everything_else_at_full(store: SqliteStore) -> None:
    seen: list[int] = []

    def claim_reading_level(task: models.BackgroundTask) -> models.BackgroundTask:
        seen.append(level(store))  # read inside the claim's own transaction
        return transitions.claim(task, at(10), NODE)

    first, second = new(), new()
    store.insert_many([first, second])
    assert level(store) == FULL
    (claimed,) = store.claim_due("alpha", at(10), 1, claim_reading_level)
    assert seen == [NORMAL]
    assert level(store) == NORMAL
    # Outcome writes are durable, and so is a commit of claims that carries them.
    _, [[other]] = store.apply_and_claim(
        [succeeded(claimed)], [("alpha", 1)], at(10), claim_reading_level
    )
    assert seen == [NORMAL, FULL]
    assert store.apply([succeeded(other)]) == [True]
    assert level(store) == FULL
    store.insert_many([new()])
    assert level(store) == FULL
    assert store.claim_due("alpha", at(10), 5, claimer(at(10)))
    assert level(store) == NORMAL
    store.insert_many([new()])
    assert level(store) == FULL


def test_a_normal_store_stays_normal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tasks.db", synchronous="normal")
    store.open()
    try:
        store.insert_many([new()])
        assert level(store) == NORMAL
        (task,) = store.claim_due("alpha", at(10), 1, claimer(at(10)))
        assert store.apply([succeeded(task)]) == [True]
        assert level(store) == NORMAL
    finally:
        store.close()


def until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition another thread brings about (bounded)."""
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


class Callers:
    """Threads that each call ``insert_many`` once and keep its answer."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.answers: dict[str, list[str] | BaseException] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, tasks: list[models.BackgroundTask]) -> None:
        def call() -> None:
            try:
                self.answers[name] = self.store.insert_many(tasks)
            except BaseException as exc:  # kept for the test to check
                self.answers[name] = exc

        thread = threading.Thread(target=call, name=name)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()


def hold_write_lock(
    store: SqliteStore, release: threading.Event, *, durable: bool
) -> threading.Thread:
    """Hold the writer in a transaction (claims alone, or with an outcome) until ``release``."""
    pending = new("holder")
    store.insert_many([pending])
    inside = threading.Event()

    def blocking_claim(task: models.BackgroundTask) -> models.BackgroundTask:
        inside.set()
        assert release.wait(30)
        return transitions.claim(task, at(10), NODE)

    writes: list[base.Write] = []
    if durable:
        (running,) = store.claim_due("holder", at(10), 1, claimer(at(10)))
        writes = [succeeded(running)]
        store.insert_many([new("holder")])

    thread = threading.Thread(
        target=store.apply_and_claim, args=(writes, [("holder", 1)], at(10), blocking_claim)
    )
    thread.start()
    assert inside.wait(30)
    return thread


@pytest.mark.parametrize("durable_holder", [False, True], ids=["claim-holder", "outcome-holder"])
def test_concurrent_inserts_share_one_commit_and_keep_their_own_answers(
    tmp_path: Path, durable_holder: bool
) -> None:
    path = tmp_path / "tasks.db"
    store = SqliteStore(path)
    store.open()
    stored, keyed = new(), new(key="known")
    store.insert_many([stored, keyed])
    release = threading.Event()
    holder = hold_write_lock(store, release, durable=durable_holder)
    commits: list[str] = []
    writer_of(store).set_trace_callback(
        lambda sql: commits.append(sql) if sql == "COMMIT" else None
    )
    twin, before_twin = new(), new()
    callers = Callers(store)
    batch = [new(), new()]
    single = new()
    callers.start("batch", batch)
    callers.start("id-exists", [new(task_id=stored.id)])
    callers.start("known-key", [new(key="known")])
    callers.start("twin-in-own-batch", [before_twin, twin, new(task_id=twin.id)])
    callers.start("single", [single])
    callers.start("new-key", [new(key="fresh")])
    until(lambda: len(store._pending) == 6)
    release.set()
    holder.join(30)
    callers.join()
    writer_of(store).set_trace_callback(None)

    # The holder's commit, then one for all six callers; or one in all for a durable holder.
    assert len(commits) == (1 if durable_holder else 2)
    answers = callers.answers
    assert answers["batch"] == [task.id for task in batch]
    assert answers["single"] == [single.id]
    assert answers["known-key"] == [keyed.id]
    assert isinstance(answers["id-exists"], errors.StoreError)
    assert "exists" in str(answers["id-exists"])
    assert isinstance(answers["twin-in-own-batch"], errors.StoreError)
    fresh = answers["new-key"]
    assert isinstance(fresh, list)
    assert len(fresh) == 1
    store.close()

    reopened = SqliteStore(path)
    reopened.open()
    try:
        for task_id in [*(task.id for task in batch), single.id, keyed.id, fresh[0], stored.id]:
            assert reopened.get(task_id) is not None
        # The failing callers stored nothing, not even their tasks before the failing one.
        assert reopened.get(twin.id) is None
        assert reopened.get(before_twin.id) is None
    finally:
        reopened.close()
