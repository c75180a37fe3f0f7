"""Fixtures shared by the PostgreSQL tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import support as pg


@pytest.fixture
def schema() -> Iterator[tuple[str, str]]:
    """A fresh schema on the test server, dropped after the test: (dsn, schema name)."""
    with pg.fresh_schema() as found:
        yield found
