"""faults.md#fault-22 to #fault-24: a coordinator on a SqliteStore is SIGKILLed, then restarts.

The coordinator runs ``sqlite_driver.py`` in its own session; the test kills it and then
restarts the engine on the same file in this process.  Handlers append ``"<id> <attempt>"`` to
a log with O_APPEND, which counts executions exactly.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import taskengine
from tests.conftest import until
from tests.faults.conftest import FAULTY, count_tasks, is_gone, make_engine, stop_and_check

Status = taskengine.TaskStatus
DRIVER = Path(__file__).with_name("sqlite_driver.py")
ROOT = Path(__file__).resolve().parents[2]


class Driver:
    """One run of ``sqlite_driver.py``."""

    def __init__(self, mode: str, db: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.stderr_path = workdir / f"driver-{mode}.stderr"
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(DRIVER), mode, str(db), str(workdir)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group, which the test may kill
            )
        self.extra_groups: set[int] = set()

    def ids(self) -> list[str]:
        """The ids the driver acknowledged (written once every create returned)."""

        def read() -> list[str] | None:
            assert self.proc.poll() is None, self.stderr_path.read_text()
            try:
                return list(json.loads((self.workdir / "ids.json").read_text()))
            except FileNotFoundError:
                return None

        return until(read, timeout=60)

    def worker_pids(self) -> set[int]:
        """The driver's worker processes (they lead their own process groups)."""
        found = set()
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(child.pid) == child.pid:
                    found.add(child.pid)
        return found

    def descendants(self) -> set[int]:
        """Every process the driver started (workers, the forkserver, the resource tracker)."""
        return {child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)}

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def kill_coordinator(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        for group in [self.proc.pid, *self.extra_groups]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    started: list[Driver] = []

    def start(mode: str) -> Driver:
        each = Driver(mode, tmp_path / "tasks.db", tmp_path)
        started.append(each)
        return each

    yield start
    for each in started:
        each.cleanup()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def log_lines(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()]


def test_kill_with_pending_tasks_then_restart_runs_each_exactly_once(
    driver: Any, tmp_path: Path
) -> None:
    """faults.md#fault-22."""
    db = tmp_path / "tasks.db"
    log = tmp_path / "runs.log"
    run = driver("pending")
    ids = run.ids()
    assert len(ids) == 100
    run.kill_group()
    assert integrity(db) == "ok"

    engine = make_engine(store=taskengine.SqliteStore(db))
    try:
        for n, task_id in enumerate(ids):
            task = engine.get(task_id)
            assert task is not None, task_id
            assert task.type == "logged"
            assert task.status is Status.PENDING
            assert task.attempts == 0
            assert task.payload == {"log": str(log), "n": n}
        engine.register_handler("logged", FAULTY, "quick_log_attempt", max_worker_count=2)
        finals = [engine.wait(task_id, timeout=30) for task_id in ids]
        assert all(task.status is Status.SUCCESS for task in finals)
        assert all(task.attempts == 1 for task in finals)
        assert count_tasks(engine) == 100
    finally:
        stop_and_check(engine)
    assert sorted(log_lines(log)) == sorted((task_id, 1) for task_id in ids)
    assert integrity(db) == "ok"


def test_kill_while_processing_then_restart_counts_the_cut_attempts(
    driver: Any, tmp_path: Path
) -> None:
    """faults.md#fault-23: kill only the coordinator; its workers must exit by themselves."""
    db = tmp_path / "tasks.db"
    log = tmp_path / "runs.log"
    run = driver("busy")
    ids = run.ids()
    # Wait until a second round of attempts started (the first round finished or is finishing).
    until(lambda: len(list(tmp_path.glob("*-1.pid"))) >= 4, timeout=30)
    workers = run.worker_pids()
    everything = run.descendants()
    assert len(workers) >= 1
    run.extra_groups |= workers  # cleanup's safety net, should the test fail below
    run.kill_coordinator()
    # Workers notice their coordinator's death (lifeline EOF) and exit, mid-handler included;
    # so do the forkserver and the resource tracker.
    until(lambda: all(is_gone(pid) for pid in workers), timeout=5)
    until(lambda: all(is_gone(pid) for pid in everything), timeout=5)
    assert integrity(db) == "ok"

    store = taskengine.SqliteStore(db)
    store.open()
    interrupted = {task.id: task for task in store.processing()}
    assert interrupted, "nothing was processing at the kill"
    assert set(interrupted) <= set(ids)
    engine = make_engine(store=store)
    try:
        # Recovery at start: each cut-short attempt is counted with WorkerCrashedError.
        for task_id, before in interrupted.items():
            task = engine.get(task_id)
            assert task is not None
            assert task.status is Status.PENDING
            assert task.attempts == before.attempts
            assert task.error is not None
            assert task.error.type == "WorkerCrashedError"
        engine.register_handler("logged", FAULTY, "quick_log_attempt", max_worker_count=2)
        finals = {task_id: engine.wait(task_id, timeout=30) for task_id in ids}
        assert all(task.status is Status.SUCCESS for task in finals.values())
        for task_id, before in interrupted.items():
            assert finals[task_id].attempts == before.attempts + 1
    finally:
        stop_and_check(engine)

    runs = log_lines(log)
    assert len(runs) == len(set(runs)), "an attempt number ran twice"
    per_id = collections.Counter(task_id for task_id, _ in runs)
    assert set(per_id) == set(ids)  # at least once each
    duplicated = {task_id for task_id, count in per_id.items() if count > 1}
    assert duplicated <= set(interrupted)  # duplicates only for attempts cut by the kill
    assert integrity(db) == "ok"


def test_kill_during_create_many_is_all_or_nothing(driver: Any, tmp_path: Path) -> None:
    """faults.md#fault-24: a create_many cut by SIGKILL leaves 0 or all of its 1000 tasks."""
    db = tmp_path / "tasks.db"
    acks = tmp_path / "acks"
    run = driver("bulk")

    def acknowledged() -> int:
        return len(acks.read_text().splitlines()) if acks.exists() else 0

    def running_and_acknowledged() -> bool:
        assert run.proc.poll() is None, run.stderr_path.read_text()
        return acknowledged() >= 3

    until(running_and_acknowledged, timeout=60)
    run.kill_group()  # lands somewhere inside a later create_many
    done = acknowledged()
    assert integrity(db) == "ok"
    engine = make_engine(store=taskengine.SqliteStore(db))
    try:
        stored = count_tasks(engine, task_type="bulk")
    finally:
        stop_and_check(engine)
    assert stored % 1000 == 0, stored
    assert stored in (done * 1000, (done + 1) * 1000), (stored, done)
