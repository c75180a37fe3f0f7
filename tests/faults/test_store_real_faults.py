"""faults.md#fault-27 to #fault-28, real SQLite failures: a full database, another's lock.

``PRAGMA max_page_count`` caps the file at its size (SQLite then reports ``SQLITE_FULL`` as on a
full disk), and a second process holds ``BEGIN EXCLUSIVE``.  API calls raise ``StoreError``
and store nothing, held outcomes land once the store recovers, reads are served meanwhile, and
the error is logged once per outage.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

import taskengine
from tests.conftest import until
from tests.faults.conftest import BASIC, FAULTY, assert_responsive, make_engine, stop_and_check
from tests.faults.faulty_store import DISK_FULL
from tests.faults.test_store_faults import (
    _in,
    _thread_cpu,
    assert_valid,
    integrity,
    outage_logs,
    raw,
    statuses,
)

Status = taskengine.TaskStatus


def test_a_real_full_database_holds_outcomes_until_space_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """faults.md#fault-27 (real SQLITE_FULL): ``PRAGMA max_page_count`` caps the file's size."""
    db = tmp_path / "tasks.db"
    store = taskengine.SqliteStore(db)
    engine = make_engine(store=store, retry_interval=0)
    big = [bytes([n]) * 300_000 for n in range(3)]
    try:
        ids = engine.create_many("big", big, retain_for=None)  # no handler yet: they wait

        def cap(pages: int) -> None:
            with store._write_lock:  # the writer connection is the store's to use
                assert store._writer is not None
                store._writer.execute(f"PRAGMA max_page_count = {int(pages)}")

        cap(raw(db, "PRAGMA page_count")[0][0])
        refused = None
        for _ in range(20):  # free pages inside the file may take a few more rows first
            try:
                engine.create("ballast", big[0])
            except taskengine.StoreError as exc:
                refused = exc
                break
        assert refused is not None
        assert DISK_FULL in str(refused)
        stored = statuses(db)
        with caplog.at_level(logging.WARNING, logger="taskengine"):
            engine.register_handler("big", BASIC, "echo", max_worker_count=3)
            until(lambda: outage_logs(caplog) >= 1)  # a 300 kB result does not fit
            assert all(engine.get(t).status is not Status.SUCCESS for t in ids)  # type: ignore[union-attr]
            assert statuses(db) == {**stored, **{t: statuses(db)[t] for t in ids}}
            cap(1_000_000_000)  # space returns
            for task_id, payload in zip(ids, big, strict=True):
                done = engine.wait(task_id, timeout=30)
                assert done.status is Status.SUCCESS
                assert done.result == payload
            assert outage_logs(caplog) == 1
        assert integrity(db) == "ok"
        assert not {t: s for t, s in statuses(db).items() if s == "processing"}
        assert_responsive(engine)
    finally:
        stop_and_check(engine)


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_database_locked_by_another_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """faults.md#fault-28: another process holds BEGIN EXCLUSIVE for a few seconds."""
    db = tmp_path / "tasks.db"
    engine = make_engine(store=taskengine.SqliteStore(db, busy_timeout=0.5), retry_interval=0)
    release = tmp_path / "release"
    holder = None
    try:
        engine.register_handler("flaky", FAULTY, "action")
        engine.register_handler("echo", BASIC, "echo", max_worker_count=2)
        gate = engine.create("flaky", {"action": "gate", "release": str(release)}, retain_for=None)
        soon = engine.create_many("echo", [1, 2, 3], retain_for=None, run_at=_in(0.3))
        until(lambda: statuses(db)[gate] == "processing")
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        reactor = engine._reactor._thread.native_id
        with caplog.at_level(logging.WARNING, logger="taskengine"):
            cpu_before = _thread_cpu(reactor)
            release.touch()  # its outcome meets the lock
            began = time.monotonic()
            with pytest.raises(taskengine.StoreError, match="locked"):
                engine.create("echo", 9)
            assert time.monotonic() - began >= 0.45  # the busy timeout was waited for
            with pytest.raises(taskengine.StoreError, match="locked"):
                engine.cancel(soon[0])
            until(lambda: time.monotonic() - began > 3.0, timeout=10)
            # Reads are served (WAL), and the held outcome is not stored yet.
            assert engine.get(gate).status is Status.PROCESSING  # type: ignore[union-attr]
            assert len(engine.query(task_type="echo").entities) == 3
            assert outage_logs(caplog) == 1, [r.getMessage() for r in caplog.records]
            assert _thread_cpu(reactor) - cpu_before < 0.5
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.wait(timeout=30) == 0
            assert engine.wait(gate, timeout=30).status is Status.SUCCESS
            for task_id in soon:
                assert engine.wait(task_id, timeout=30).status is Status.SUCCESS
        assert_valid(db)
        assert len(statuses(db)) == 4  # the refused create stored nothing
        assert_responsive(engine)
    finally:
        if holder is not None:
            if holder.poll() is None:
                holder.kill()
            holder.communicate(timeout=30)  # reaps it and closes its pipes
        stop_and_check(engine)
