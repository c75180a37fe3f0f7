"""Fixtures of the scheduler tests: fake-clock schedulers and PostgreSQL schedule stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from taskengine import TaskScheduler
from taskengine.core.clock import FakeClock

#: A fixed start, on a whole minute, so cron and interval slots are easy to read.
START = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def scheduler(clock: FakeClock) -> Iterator[TaskScheduler]:
    """A started in-memory scheduler on the fake clock."""
    sched = TaskScheduler(clock=clock).start()
    yield sched
    sched.stop(timeout=10)


def postgres_dsn() -> str:
    """The test server's DSN; skip without one, but fail in CI (a silent skip hides a gap)."""
    dsn = os.environ.get("TASKENGINE_TEST_POSTGRES_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but TASKENGINE_TEST_POSTGRES_DSN is not set")
        pytest.skip("TASKENGINE_TEST_POSTGRES_DSN is not set")
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at TASKENGINE_TEST_POSTGRES_DSN is not usable: {exc}")
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    return dsn


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(dsn, a fresh schema name); the schema is dropped after the test."""
    import psycopg
    from psycopg import sql

    dsn = postgres_dsn()
    name = f"te_sched_{uuid.uuid4().hex[:12]}"
    yield dsn, name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
