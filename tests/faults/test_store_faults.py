"""faults.md#fault-27 and #fault-30, injected: the SQLite store's writes fail under the engine.

The injected faults (``faulty_store.py``) fail one writer statement at a time, for every
position k in a mixed workload, then every statement for an outage, and a ``COMMIT`` that
commits but reports an error (the ambiguous commit).  In each case API calls raise
``StoreError`` and change nothing, internal transitions are held and retried with backoff, the
error is logged once per outage, the engine keeps serving reads, and afterwards every task is in
a valid stored state, none lost or left processing.  The real faults (a full database, a lock
held by another process) are in ``test_store_real_faults.py``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

import taskengine
from tests.conftest import until
from tests.faults.conftest import BASIC, FAULTY, assert_responsive, make_engine, stop_and_check
from tests.faults.faulty_store import DISK_FULL, WRITE_SITES, FaultySqliteStore, WriteFaults

Status = taskengine.TaskStatus
T = TypeVar("T")
OUTAGE_LOG = "task store failed"
FINAL = {"success", "failed", "cancelled"}
#: The store method behind each API call.
API_SITES = {
    "create": "insert_many",
    "create_many": "insert_many",
    "cancel": "apply",
    "remove": "apply",
    "retry": "apply",
}
#: Every kind of statement each write method of SqliteStore runs in its transaction.
EVERY_STATEMENT = [
    *(("insert_many", word) for word in ("BEGIN", "SELECT", "INSERT", "COMMIT")),
    *(("apply", word) for word in ("BEGIN", "UPDATE", "DELETE", "COMMIT")),
    *(("apply_and_claim", word) for word in ("BEGIN", "UPDATE", "DELETE", "SELECT", "COMMIT")),
    *(("purge_expired", word) for word in ("BEGIN", "DELETE", "COMMIT")),
]


def raw(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on a fresh read-only connection (what is really stored)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def statuses(db: Path) -> dict[str, str]:
    return dict(raw(db, "SELECT id, status FROM tasks"))  # type: ignore[arg-type]


def integrity(db: Path) -> str:
    return str(raw(db, "PRAGMA integrity_check")[0][0])


def outage_logs(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if OUTAGE_LOG in r.getMessage())


class Calls:
    """Runs API calls that may meet the injected fault; checks a refused call changed nothing."""

    def __init__(self, engine: taskengine.TaskEngine, db: Path, faults: WriteFaults) -> None:
        self.engine = engine
        self.db = db
        self.faults = faults
        self.refused: list[str] = []
        self.aim: str | None = None  # a call whose own first statement is made to fail

    def _snapshot(self, target: str | None) -> tuple[set[str], object]:
        # The reactor changes (and deletes) other tasks meanwhile: compare only what this call
        # may touch, new ids (creates) and the target's row (a parked or failed task).
        ids = {row[0] for row in raw(self.db, "SELECT id FROM tasks")}
        row = raw(self.db, "SELECT * FROM tasks WHERE id = ?", (target,)) if target else None
        return ids, row

    def __call__(self, name: str, call: Callable[[], T], target: str | None = None) -> T:
        before = self._snapshot(target)
        if name == self.aim:
            self.aim = None
            self.faults.arm_match(API_SITES[name], "BEGIN")
        try:
            return call()
        except taskengine.StoreError as exc:
            refusal = exc
        assert DISK_FULL in str(refusal)
        ids, row = self._snapshot(target)
        assert not ids - before[0], f"{name} raised StoreError but stored a task"
        assert row == before[1], f"{name} raised StoreError but changed its task"
        self.refused.append(name)
        return call()  # the fault fired once: the caller's retry goes through


def workload(engine: taskengine.TaskEngine, calls: Calls, n: int) -> None:
    """Every kind of write: creates, a batch, handler failures with retries, retry, cancel,
    remove, zero and short retention; then check each task's end."""
    future = {"run_at": _in(3600)}
    kept = calls("create", lambda: engine.create("echo", n, retain_for=None))
    batch = calls("create_many", lambda: engine.create_many("echo", [n, n + 1], retain_for=None))
    flaky = calls(
        "create",
        lambda: engine.create(
            "flaky", {"action": "raise"}, retry_count=1, retry_interval=0, retain_for=None
        ),
    )
    parked = calls("create", lambda: engine.create("echo", n, retain_for=None, **future))
    doomed = calls("create", lambda: engine.create("echo", n, retain_for=None, **future))
    gone = calls("create", lambda: engine.create("echo", n))
    brief = calls("create", lambda: engine.create("echo", n, retain_for=0.05))
    key = f"key-{n}-{time.monotonic_ns()}"
    keyed = calls("create", lambda: engine.create("echo", n, retain_for=None, idempotency_key=key))
    again = calls("create", lambda: engine.create("echo", n, idempotency_key=key))
    assert again == keyed
    assert calls("cancel", lambda: engine.cancel(parked), parked) is True
    assert calls("remove", lambda: engine.remove(doomed), doomed) is True

    for task_id in [kept, keyed, *batch]:
        done = engine.wait(task_id, timeout=30)
        assert done.status is Status.SUCCESS, done
    assert engine.wait(gone, timeout=30).status is Status.SUCCESS
    assert engine.wait(brief, timeout=30).status is Status.SUCCESS
    failed = engine.wait(flaky, timeout=30)
    assert failed.status is Status.FAILED, failed
    assert failed.attempts == 2
    assert calls("retry", lambda: engine.retry(flaky), flaky) is True
    until(lambda: _final_attempts(engine, flaky, 3), timeout=30)
    assert engine.get(parked).status is Status.CANCELLED  # type: ignore[union-attr]
    assert engine.get(doomed) is None
    assert engine.get(gone) is None
    until(lambda: engine.get(brief) is None, timeout=30)


def _final_attempts(engine: taskengine.TaskEngine, task_id: str, attempts: int) -> bool:
    task = engine.get(task_id)
    assert task is not None
    return task.status is Status.FAILED and task.attempts == attempts


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def assert_valid(db: Path) -> None:
    """Nothing left processing or pending, nothing but final statuses, the file intact."""
    assert integrity(db) == "ok"
    left = {task_id: s for task_id, s in statuses(db).items() if s not in FINAL}
    assert not left, left


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[tuple[taskengine.TaskEngine, WriteFaults, Path]]:
    db = tmp_path / "tasks.db"
    faults = WriteFaults()
    engine = make_engine(store=FaultySqliteStore(db, faults), retry_interval=0)
    engine.register_handler("echo", BASIC, "echo", max_worker_count=2)
    engine.register_handler("flaky", FAULTY, "action")
    yield engine, faults, db
    faults.outage = False
    faults.disarm()
    stop_and_check(engine)


def test_disk_full_at_every_write_statement(
    faulty: tuple[taskengine.TaskEngine, WriteFaults, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """faults.md#fault-27 (injected): the k-th writer statement fails, for every k."""
    engine, faults, db = faulty
    calls = Calls(engine, db, faults)
    workload(engine, calls, 0)  # warm: workers started, the first sweep done
    sites: set[tuple[str, str]] = set()
    k = 0
    with caplog.at_level(logging.WARNING, logger="taskengine"):
        while True:
            k += 1
            caplog.clear()
            faults.arm(k)
            workload(engine, calls, k)
            fired = list(faults.fired)
            faults.disarm()
            assert len(fired) <= 1
            if not fired:
                break  # k is past the workload's last write statement
            sites.update(fired)
            assert_valid(db)
            assert outage_logs(caplog) <= 1  # once per outage, never per try
            assert k < 500, "the workload never ran out of write statements"
        # Timing moves statements between positions: aim at each write site's statements
        # that no position hit this time.
        for site, word in sorted(set(EVERY_STATEMENT) - sites):
            faults.arm_match(site, word)
            workload(engine, calls, k)
            k += 1
            sites.update(faults.fired)
            faults.disarm()
            assert_valid(db)
        for name in sorted(set(API_SITES) - set(calls.refused)):
            calls.aim = name  # no position hit this call's own transaction
            workload(engine, calls, k)
            k += 1
            faults.disarm()
            assert_valid(db)
    assert sites >= set(EVERY_STATEMENT), set(EVERY_STATEMENT) - sites
    assert {site for site, _ in sites} >= set(WRITE_SITES)
    assert set(calls.refused) >= set(API_SITES)
    assert_responsive(engine)


def _thread_cpu(native_id: int | None) -> float:
    """CPU seconds used so far by one thread of this process."""
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return float(thread.user_time + thread.system_time)
    raise AssertionError(f"no thread {native_id}")


def test_write_outage_holds_outcomes_backs_off_and_logs_once(
    faulty: tuple[taskengine.TaskEngine, WriteFaults, Path],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """faults.md#fault-27 (injected outage): every write fails for a while, work due meanwhile."""
    engine, faults, db = faulty
    release = tmp_path / "release"
    gate = engine.create("flaky", {"action": "gate", "release": str(release)}, retain_for=None)
    until(lambda: statuses(db)[gate] == "processing")
    soon = engine.create_many(
        "echo", list(range(5)), retain_for=None, run_at=_in(0.3)
    )  # due during the outage, with free workers: the claims fail over and over
    reactor = engine._reactor._thread.native_id
    with caplog.at_level(logging.WARNING, logger="taskengine"):
        faults.outage = True
        cpu_before, tries_before = _thread_cpu(reactor), faults.statements
        release.touch()  # the gated attempt ends: its outcome cannot be stored
        began = time.monotonic()
        with pytest.raises(taskengine.StoreError, match=DISK_FULL):
            engine.create("echo", 1)
        with pytest.raises(taskengine.StoreError, match=DISK_FULL):
            engine.cancel(soon[0])
        # Reads are served throughout.
        until(lambda: time.monotonic() - began > 2.5, timeout=10)
        assert engine.get(gate).status is Status.PROCESSING  # type: ignore[union-attr]
        assert len(engine.query(task_type="echo", page_size=100).entities) == 5
        cpu, tries = _thread_cpu(reactor) - cpu_before, faults.statements - tries_before
        faults.outage = False
        assert outage_logs(caplog) == 1, [r.getMessage() for r in caplog.records]
        # Backoff, not a hot loop: few store tries, and the reactor mostly sleeps.
        assert tries < 40, tries
        assert cpu < 0.5, cpu
        assert engine.wait(gate, timeout=30).status is Status.SUCCESS
        for task_id in soon:
            assert engine.wait(task_id, timeout=30).status is Status.SUCCESS
        until(lambda: any("writable again" in r.getMessage() for r in caplog.records))
    assert_valid(db)
    assert_responsive(engine)


def test_stop_during_an_outage_retries_held_outcomes_until_its_timeout(
    faulty: tuple[taskengine.TaskEngine, WriteFaults, Path], tmp_path: Path
) -> None:
    """An outcome held by an outage is stored if the outage ends before stop's timeout."""
    engine, faults, db = faulty
    release = tmp_path / "release"
    gate = engine.create("flaky", {"action": "gate", "release": str(release)}, retain_for=None)
    until(lambda: statuses(db)[gate] == "processing")
    faults.outage = True
    release.touch()
    until(lambda: faults.fired)  # the outcome arrived and could not be stored
    healer = threading.Timer(1.0, lambda: setattr(faults, "outage", False))
    healer.start()
    began = time.monotonic()
    engine.stop(timeout=8)
    healer.join()
    assert time.monotonic() - began < 8 + 3
    assert statuses(db)[gate] == "success"


def test_stop_during_a_long_outage_returns_in_time_and_names_what_it_could_not_store(
    faulty: tuple[taskengine.TaskEngine, WriteFaults, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The task keeps its last stored state; the next start counts the attempt as crashed."""
    engine, faults, db = faulty
    release = tmp_path / "release"
    gate = engine.create("flaky", {"action": "gate", "release": str(release)}, retain_for=None)
    until(lambda: statuses(db)[gate] == "processing")
    faults.outage = True
    release.touch()
    until(lambda: faults.fired)
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="taskengine"):
        engine.stop(timeout=1)
    assert time.monotonic() - began < 1 + 3
    assert any(gate in r.getMessage() for r in caplog.records), caplog.text
    faults.outage = False
    assert statuses(db)[gate] == "processing"
    again = make_engine(store=taskengine.SqliteStore(db))
    try:
        task = again.get(gate)
        assert task is not None
        assert task.status is Status.PENDING
        assert task.error is not None
        assert task.error.type == "WorkerCrashedError"
    finally:
        stop_and_check(again)


# -- faults.md#fault-30: a commit that committed but reported a failure ---------------------


def test_ambiguous_claim_commit_does_not_strand_the_task(
    faulty: tuple[taskengine.TaskEngine, WriteFaults, Path],
) -> None:
    """The claim committed, the reactor saw an error: the claimed task must still run."""
    engine, faults, db = faulty
    assert engine.wait(engine.create("echo", 0), timeout=30).status is Status.SUCCESS
    faults.arm_match("apply_and_claim", "COMMIT", after=True)
    task_id = engine.create("echo", 1, retain_for=None)
    done = engine.wait(task_id, timeout=30)
    assert faults.fired == [("apply_and_claim", "COMMIT")]
    assert done.status is Status.SUCCESS
    assert done.attempts == 1  # the stranded claim was handed back uncounted
    assert_valid(db)


def test_ambiguous_outcome_commit_is_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The outcome committed, the reactor saw an error: callbacks and wait must still see it."""
    db = tmp_path / "tasks.db"
    faults = WriteFaults()
    engine = make_engine(store=FaultySqliteStore(db, faults), retry_interval=0)
    seen: list[taskengine.BackgroundTask] = []
    release = tmp_path / "release"
    try:
        engine.register_handler("flaky", FAULTY, "action", seen.append)
        gate = engine.create("flaky", {"action": "gate", "release": str(release)}, retain_for=None)
        until(lambda: statuses(db)[gate] == "processing")
        faults.arm_match("apply_and_claim", "COMMIT", after=True)
        release.touch()
        done = engine.wait(gate, timeout=30)
        assert faults.fired == [("apply_and_claim", "COMMIT")]
        assert done.status is Status.SUCCESS
        until(lambda: [t.status for t in seen] == [Status.PROCESSING, Status.SUCCESS])
        assert_valid(db)
    finally:
        stop_and_check(engine)


def test_an_outcome_held_by_an_outage_keeps_its_claim_held(
    faulty: tuple[taskengine.TaskEngine, WriteFaults, Path], tmp_path: Path
) -> None:
    """The claims a node renews include attempts whose outcome waits for the store: a lease
    must not lapse (and the attempt run again elsewhere) because the write is late."""
    engine, faults, db = faulty
    release = tmp_path / "release"
    gate = engine.create("flaky", {"action": "gate", "release": str(release)}, retain_for=None)
    until(lambda: statuses(db)[gate] == "processing")
    assert gate in (engine._held_task_ids() or set())
    faults.outage = True
    try:
        release.touch()  # the attempt ends: its outcome cannot be stored
        until(lambda: engine._reactor.pool_facts()["flaky"].tasks_done >= 1)
        assert statuses(db)[gate] == "processing"
        assert gate in (engine._held_task_ids() or set())
    finally:
        faults.outage = False
    assert engine.wait(gate, timeout=30).status is Status.SUCCESS
