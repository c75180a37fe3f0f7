"""SQLite rows: tasks to rows and back, and the UPDATE of only the changed columns."""

from __future__ import annotations

import sqlite3

import pytest

from taskengine.core import codec, transitions
from taskengine.stores.sqlite import schema
from tests.contract.factories import NODE, Status, at, drive, full_task, new


@pytest.fixture
def conn() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    for statement in schema.DDL:
        connection.execute(statement)
    return connection


def test_rows_round_trip_every_field_and_ignore_trailing_columns() -> None:
    task = full_task()
    row = schema.to_row(task)
    assert len(row) == len(schema.COLUMNS)
    assert schema.from_row(row) == task
    # Query pages add a sort key and due selection a rowid after the columns.
    assert schema.from_row((*row, 42)) == task


def test_a_row_with_a_status_that_is_not_one_is_refused() -> None:
    row = list(schema.to_row(new("t")))
    row[2] = "sleeping"
    with pytest.raises(ValueError, match="sleeping"):
        schema.from_row(tuple(row))


def test_an_unchanged_task_needs_no_update() -> None:
    row = schema.to_row(new("t"))
    assert schema.changed_update(row, row, fenced=True) is None


def test_a_claim_sets_only_the_columns_it_changes() -> None:
    task = new("t", now=at(0))
    claimed = transitions.claim(task, at(5), NODE)
    update = schema.changed_update(schema.to_row(task), schema.to_row(claimed), fenced=False)
    assert update is not None
    sql, values = update
    assignments = sql.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    assert assignments == (
        "status = ?, date_modified = ?, date_next_process = ?, attempts = ?, node_identity = ?"
    )
    assert values == ("processing", schema.to_row(claimed)[7], None, 1, NODE)
    assert sql.endswith(" WHERE id = ?")


@pytest.mark.parametrize("key", ["id", "fenced", "rowid"])
def test_the_update_applies_on_each_kind_of_key(conn: sqlite3.Connection, key: str) -> None:
    task = new("t", now=at(0))
    conn.execute(schema.INSERT, schema.to_row(task))
    rowid = conn.execute("SELECT rowid FROM tasks WHERE id = ?", (task.id,)).fetchone()[0]
    done = transitions.succeed(transitions.claim(task, at(1), NODE), codec.encode(7), at(2))
    update = schema.changed_update(
        schema.to_row(task), schema.to_row(done), fenced=key == "fenced", by_rowid=key == "rowid"
    )
    assert update is not None
    sql, values = update
    keys = {"id": (task.id,), "fenced": (task.id, "pending", 0), "rowid": (rowid,)}[key]
    assert conn.execute(sql, (*values, *keys)).rowcount == 1
    assert schema.from_row(conn.execute(schema.SELECT_BY_ID, (task.id,)).fetchone()) == done


def test_a_fenced_update_changes_nothing_when_the_fence_fails(conn: sqlite3.Connection) -> None:
    task = new("t", now=at(0))
    conn.execute(schema.INSERT, schema.to_row(task))
    cancelled = drive(task, Status.CANCELLED, at(1))
    update = schema.changed_update(schema.to_row(task), schema.to_row(cancelled), fenced=True)
    assert update is not None
    sql, values = update
    assert conn.execute(sql, (*values, task.id, "processing", 0)).rowcount == 0
    assert schema.from_row(conn.execute(schema.SELECT_BY_ID, (task.id,)).fetchone()) == task
