"""Fixtures shared by the PostgreSQL tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import taskengine
from tests.conftest import until, worker_pids
from tests.postgres import support as pg


@pytest.fixture
def schema() -> Iterator[tuple[str, str]]:
    """A fresh schema on the test server, dropped after the test: (dsn, schema name)."""
    with pg.fresh_schema() as found:
        yield found


@pytest.fixture
def make_engine(
    schema: tuple[str, str],
) -> Iterator[Callable[..., taskengine.TaskEngine]]:
    """Started engines on the test schema (each with its own store); all stopped after."""
    made: list[taskengine.TaskEngine] = []

    def make(*, store_options: dict[str, object] | None = None, **options: object):  # type: ignore[no-untyped-def]
        store = pg.make_store(*schema, **(store_options or {}))
        engine = taskengine.TaskEngine(store, **options)  # type: ignore[arg-type]
        made.append(engine)
        return engine.start()

    yield make
    for engine in made:
        engine.stop(timeout=10)
    until(lambda: not worker_pids(), timeout=15)
