"""Fenced writes and batch inserts as SQL, in as few statements as the batch allows.

``SqliteStore`` runs them inside its own transactions (the writer connection, under its write
lock); these functions only turn ``base.Write`` values into statements and run them on the
connection they are given.  A batch of writes that share their SQL (a group commit's outcomes,
the deletes of tasks finished with ``retain_for=0``) goes in one ``executemany`` or one
``DELETE ... WHERE id IN (...)`` under a savepoint, falling back to a statement per write when
a fence did not hold, so that each write's own answer is known.  Out-of-row blob writes
(``blobs``) follow the row write they belong to, and only once it applied.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TypeVar

from taskengine.stores import base
from taskengine.stores.sqlite import blobs, schema

__all__ = ["Statement", "apply_statements", "bulk", "insert_rows", "write_statement"]

T = TypeVar("T")


#: One fenced write: its SQL, its parameters, and the task's out-of-row blob writes (if any).
Statement = tuple[str, tuple[object, ...], tuple[str, blobs.BlobWrites] | None]


def write_statement(write: base.Write) -> Statement:
    """The SQL, parameters and out-of-row blob writes of one fenced write."""
    if isinstance(write, base.Update):
        guard = (write.task.id, write.expected_status.value, write.expected_attempts)
        new_row = schema.to_row(write.task)
        old_row = None
        if write.previous is not None and write.previous.id == write.task.id:
            old_row = schema.to_row(write.previous)
        changes = blobs.blob_writes(old_row, new_row)
        out_of_row = (write.task.id, changes) if changes else None
        if old_row is not None:
            update = schema.changed_update(
                blobs.marked(old_row), blobs.marked(new_row), fenced=True
            )
            # Nothing changed: still check the fence, so the answer means what it says.
            sql, values = update or (schema.UPDATE_FENCED_NOTHING, ())
            return sql, (*values, *guard), out_of_row
        return schema.UPDATE_FENCED, (*blobs.marked(new_row), *guard), out_of_row
    fence = (write.expected_status is not None, write.expected_attempts is not None)
    params: tuple[object, ...] = (write.task_id,)
    if write.expected_status is not None:
        params += (write.expected_status.value,)
    if write.expected_attempts is not None:
        params += (write.expected_attempts,)
    return schema.DELETE[fence], params, None


def apply_statements(conn: sqlite3.Connection, statements: Sequence[Statement]) -> list[bool]:
    """Run fenced writes in order; for each, whether it changed its row.

    Consecutive writes with the same SQL (a group commit's finishing deletes share one) go in
    one ``executemany`` when every one of them holds its fence, the usual case.  A write's
    out-of-row blobs are stored or removed only once its fenced row write has applied.
    """
    applied: list[bool] = []
    start = 0
    while start < len(statements):
        sql = statements[start][0]
        end = start + 1
        while end < len(statements) and statements[end][0] == sql:
            end += 1
        run = statements[start:end]
        deleting = sql in DELETES and has_blobs(conn, [params[0] for _, params, _ in run])
        with blobs.small_cache(conn) if deleting else contextlib.nullcontext():
            if len(run) > 1 and bulk(
                conn, len(run), functools.partial(run_same, conn, sql, [p for _, p, _ in run])
            ):
                done = [True] * len(run)
            else:
                done = [conn.execute(sql, params).rowcount == 1 for _, params, _ in run]
        for (_, _, out_of_row), held in zip(run, done, strict=True):
            if held and out_of_row is not None:
                blobs.apply_blob_writes(conn, *out_of_row)
        applied += done
        start = end
    return applied


#: The SQL of fenced deletes, whose trigger may remove large blobs.
DELETES: Final = frozenset(schema.DELETE.values())


def has_blobs(conn: sqlite3.Connection, task_ids: Sequence[object]) -> bool:
    """Whether any of these tasks has a large blob (a store without any answers in one step)."""
    if conn.execute(schema.ANY_BLOB).fetchone() is None:
        return False
    return any(
        conn.execute(schema.blobs_of_sql(len(chunk)), chunk).fetchone() is not None
        for chunk in chunks(task_ids, schema.DELETE_IDS)
    )


def run_same(conn: sqlite3.Connection, sql: str, params: list[tuple[object, ...]]) -> None:
    """Run one statement per parameter set, as few times as the statement allows.

    Fenced deletes (a group commit's finished tasks) that share their fence go as one
    ``DELETE ... WHERE id IN (...)`` per ``schema.DELETE_IDS`` ids; anything else as one
    ``executemany``.  The caller compares the rows changed with the count of parameter sets.
    """
    if sql != schema.DELETE[(True, True)]:
        conn.executemany(sql, params)
        return
    by_fence: dict[tuple[object, object], list[object]] = {}
    for task_id, status, attempts in params:
        by_fence.setdefault((status, attempts), []).append(task_id)
    for fence, ids in by_fence.items():
        for chunk in chunks(ids, schema.DELETE_IDS):
            conn.execute(schema.delete_fenced_sql(len(chunk)), (*chunk, *fence))


def bulk(conn: sqlite3.Connection, expected: int, run: Callable[[], object]) -> bool:
    """Run a batch of ``expected`` row writes; False (and nothing done) if not all applied.

    A batch in one or a few statements instead of a statement per row from Python: on a batch
    of outcomes or a ``create_many`` this is a measurable share of the store's time.  When a
    row fails (a constraint) or changes no row (a fence that did not hold), the batch is rolled
    back to its savepoint, so that the caller can go row by row and learn which one it was.
    """
    before = conn.total_changes
    conn.execute("SAVEPOINT bulk")
    try:
        run()
    except sqlite3.IntegrityError:
        applied = False
    else:
        applied = conn.total_changes - before == expected
    if not applied:
        conn.execute("ROLLBACK TO bulk")
    conn.execute("RELEASE bulk")
    return applied


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (one statement's worth each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert ``rows`` with as few statements as ``schema.INSERT_ROWS`` allows."""
    for chunk in chunks(rows, schema.INSERT_ROWS):
        conn.execute(schema.insert_sql(len(chunk)), list(itertools.chain.from_iterable(chunk)))
