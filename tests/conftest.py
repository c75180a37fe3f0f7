"""Shared fixtures: engines on each store, hypothesis profiles, and polling with a deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from hypothesis import HealthCheck, settings

import taskengine

T = TypeVar("T")

# pytest's own plugin for running isolated pytest sessions (tests/testing/test_pytest_plugin.py).
pytest_plugins = ["pytester"]

settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def until(predicate: Callable[[], T], timeout: float = 15.0, step: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(step)


def worker_pids() -> set[int]:
    """Pids of live taskengine worker processes descending from this process.

    Workers lead their own process group (the engine kills handlers' children through it),
    which tells them apart from multiprocessing's forkserver and resource tracker.
    """
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and os.getpgid(child.pid) == child.pid:
                found.add(child.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[taskengine.stores.TaskStore]:
    """Every store the engine supports (PostgreSQL: a fresh schema per test, dropped after)."""
    if request.param == "memory":
        yield taskengine.MemoryStore()
    elif request.param == "sqlite":
        yield taskengine.SqliteStore(tmp_path / "tasks.db")
    else:
        from tests.postgres import support as pg

        with pg.fresh_schema() as (dsn, schema):
            yield pg.make_store(dsn, schema)


@pytest.fixture
def engine(store: taskengine.stores.TaskStore) -> Iterator[taskengine.TaskEngine]:
    """A started engine on each store; stopped (and checked for leftover workers) after."""
    eng = taskengine.TaskEngine(store)
    eng.start()
    yield eng
    eng.stop(timeout=10)
    until(lambda: not worker_pids(), timeout=10)


@pytest.fixture
def memory_engine() -> Iterator[taskengine.TaskEngine]:
    """A started engine on a MemoryStore only."""
    eng = taskengine.TaskEngine(taskengine.MemoryStore())
    eng.start()
    yield eng
    eng.stop(timeout=10)
    until(lambda: not worker_pids(), timeout=10)
