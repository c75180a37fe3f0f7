"""Fixtures and helpers of the fault tests: real worker processes, killed in every way."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import taskengine
from tests.conftest import until, worker_pids

FAULTY = "tests.handlers.faulty"
BASIC = "tests.handlers.basic"
Status = taskengine.TaskStatus

_echo_registered: weakref.WeakSet[taskengine.TaskEngine] = weakref.WeakSet()


def make_engine(**options: Any) -> taskengine.TaskEngine:
    """A started MemoryStore engine with short retries and room for a few pools."""
    options.setdefault("retry_interval", 0.1)
    options.setdefault("max_total_workers", 6)
    store = options.pop("store", None)
    if store is None:  # not "or": an empty MemoryStore is falsy (it has __len__)
        store = taskengine.MemoryStore()
    return taskengine.TaskEngine(store, **options).start()


def stop_and_check(engine: taskengine.TaskEngine) -> None:
    """Stop the engine and check that no worker outlives ``stop``."""
    engine.stop(timeout=10)
    until(lambda: not worker_pids(), timeout=10)


@pytest.fixture
def eng() -> Iterator[taskengine.TaskEngine]:
    """A started MemoryStore engine (retry interval 0.1 s, up to 6 workers in all)."""
    engine = make_engine()
    yield engine
    stop_and_check(engine)


class Recorder:
    """A state-change callback that keeps every snapshot with the moment it arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[float, taskengine.BackgroundTask]] = []

    def __call__(self, task: taskengine.BackgroundTask) -> None:
        with self._lock:
            self.events.append((time.monotonic(), task))

    def of(self, task_id: str) -> list[taskengine.BackgroundTask]:
        with self._lock:
            return [task for _, task in self.events if task.id == task_id]

    def path(self, task_id: str) -> list[tuple[str, int]]:
        """The (status, attempts) sequence announced for a task."""
        return [(str(task.status), task.attempts) for task in self.of(task_id)]

    def path_when(self, task_id: str, length: int) -> list[tuple[str, int]]:
        """``path`` once ``length`` snapshots arrived (callbacks run on their own thread, so
        ``wait`` may return before the last one is delivered)."""
        until(lambda: len(self.of(task_id)) >= length)
        return self.path(task_id)

    def first(
        self, task_id: str, status: taskengine.TaskStatus
    ) -> tuple[float, taskengine.BackgroundTask] | None:
        with self._lock:
            for moment, task in self.events:
                if task.id == task_id and task.status is status:
                    return moment, task
        return None


@pytest.fixture
def recorder() -> Recorder:
    """A fresh state-change recorder."""
    return Recorder()


def read_pid(path: Path) -> int | None:
    """The pid in a file written atomically by the faulty handler, or None before it exists."""
    try:
        return int(path.read_text())
    except FileNotFoundError:
        return None


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs.

    A zombie counts as gone: it runs nothing and holds nothing but its table entry, and an
    orphan's zombie is reaped only by its new parent (in a container, PID 1 may never do it).
    """
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_responsive(engine: taskengine.TaskEngine, value: object = "ping") -> None:
    """An unrelated echo task created now completes (the engine did not wedge)."""
    if engine not in _echo_registered:
        engine.register_handler("fault-echo", BASIC, "echo")
        _echo_registered.add(engine)
    task_id = engine.create("fault-echo", value, retry_count=0)
    done = engine.wait(task_id, timeout=20)
    assert done.status is Status.SUCCESS, done.error
    assert done.result == value


def count_tasks(engine: taskengine.TaskEngine, **filters: Any) -> int:
    """How many tasks a query sees, paging through all of them."""
    total, cursor = 0, None
    while True:
        page = engine.query(cursor=cursor, page_size=1000, **filters)
        total += len(page.entities)
        cursor = page.cursor
        if cursor is None:
            return total


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t:`` then ``t[0]`` holds the elapsed seconds."""
    box: list[float] = []
    start = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - start)
