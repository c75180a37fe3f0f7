"""Keyset pages on SqliteStore seek on (sort value, id), also through ties of the sort value.

``create_many`` gives a whole batch one ``date_created``; a page after a cursor inside such a
batch must start at the cursor's id in the index, not scan the batch from its first tie.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskengine.core import cursor, models
from taskengine.stores.sqlite import schema
from taskengine.stores.sqlite.store import SqliteStore

from .factories import T0, at, new

ASC, DESC = models.SortDirection.ASCENDING, models.SortDirection.DESCENDING


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "keyset.db")
    store.open()
    yield store
    store.close()


@pytest.mark.parametrize("direction", [ASC, DESC])
def test_pages_after_a_cursor_inside_ties_continue_exactly(
    store: SqliteStore, direction: models.SortDirection
) -> None:
    tasks = [new("tie", now=T0) for _ in range(300)]  # one date_created for all
    store.insert_many(tasks)
    order = sorted(tasks, key=lambda t: t.id, reverse=direction is DESC)
    spec = cursor.QuerySpec(
        task_type="tie",
        status=models.TaskStatus.PENDING,
        sort_field="date_created",
        direction=direction,
    )
    mark = order[149]
    value, task_id = cursor.sort_key(mark, "date_created")
    page = store.query(spec, cursor.CursorPosition(value=value, task_id=task_id), 20, at(1))
    assert [t.id for t in page] == [t.id for t in order[150:170]]


@pytest.mark.parametrize("field", ["date_created", "date_modified"])
def test_keyset_on_a_plain_column_seeks_on_the_row_value(store: SqliteStore, field: str) -> None:
    spec = cursor.QuerySpec(
        task_type="tie", status=models.TaskStatus.PENDING, sort_field=field, direction=ASC
    )
    sql = schema.query_sql(spec, keyset=True)
    params = {
        "type": "tie",
        "status": "pending",
        "now": 0,
        "value": 5,
        "after_id": "a",
        "limit": 20,
    }
    with sqlite3.connect(store.path) as conn:
        lines = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    conn.close()
    assert any(f"({field},id)>(?,?)" in line for line in lines), lines
    assert not any("TEMP B-TREE" in line or line.startswith("SCAN") for line in lines), lines
