"""PgScheduleStore: schedule slots in PostgreSQL, shared by every node of a cluster.

Each node runs its own ``TaskScheduler`` with the same schedules; the ``schedules`` table of
the given schema holds one row per schedule id.  A node fires a slot only after its
``UPDATE ... WHERE id = %s AND times_key = %s AND next_trigger = %s`` moved the row on (one
statement, so exactly one node wins a slot), and before the callback runs, so a node that dies
in a callback blocks nothing.  Whether a slot is due is decided against the database's clock
(``now()``), so a node whose clock is ahead does not fire early.

The store has its own connection (autocommit, guarded by a lock) and reconnects after a
failure; a driver error is raised as ``StoreError``.  Identifiers (the schema name) are
composed with ``psycopg.sql``; every value is a bound parameter.  Importing this module
imports psycopg (the ``postgres`` extra).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final, LiteralString

import psycopg
from psycopg import sql

from taskengine.core import clock, errors, validation
from taskengine.stores import base
from taskengine.stores.schedules import (
    ScheduleRecord,
    compare_and_set_parameters,
    decode_slots,
    record_row,
)

__all__ = ["PgScheduleStore"]

#: Seconds to wait for a connection.
_CONNECT_TIMEOUT: Final = 10

_DDL: Final[tuple[LiteralString, ...]] = (
    "CREATE SCHEMA IF NOT EXISTS {schema}",
    """
    CREATE TABLE IF NOT EXISTS {schema}.schedules (
        id TEXT NOT NULL PRIMARY KEY,
        times_key TEXT NOT NULL,
        slots TEXT NOT NULL,
        next_trigger BIGINT,
        date_modified TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
)
# Floor, not round: the store's "now" is never ahead of the server's clock.
_NOW: Final = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_SELECT: Final = "SELECT id, times_key, slots FROM {schema}.schedules WHERE id = %s"
_INSERT: Final = (
    "INSERT INTO {schema}.schedules (id, times_key, slots, next_trigger) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING"
)
_UPSERT: Final = (
    "INSERT INTO {schema}.schedules (id, times_key, slots, next_trigger) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET times_key = excluded.times_key, slots = excluded.slots,"
    " next_trigger = excluded.next_trigger, date_modified = now()"
)
_CAS: Final = (
    "UPDATE {schema}.schedules SET next_trigger = %s, slots = %s, times_key = %s,"
    " date_modified = now() WHERE id = %s AND times_key = %s AND next_trigger = %s"
)
_DELETE: Final = "DELETE FROM {schema}.schedules WHERE id = %s"


class PgScheduleStore:
    """Schedule slots in ``<schema>.schedules`` on a PostgreSQL server (thread-safe).

    Args:
        dsn: a libpq connection string or URI.
        schema: the schema holding the table; created if missing.

    Raises:
        TaskValidationError: ``dsn`` or ``schema`` is not a non-empty string.
    """

    def __init__(self, dsn: str, schema: str = "public") -> None:
        if not isinstance(dsn, str) or not dsn:
            raise errors.TaskValidationError("dsn", dsn, "expected a non-empty connection string")
        self._dsn = dsn
        self._schema = validation.check_identifier_text("schema", schema)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._ready = False

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Durable and shared between nodes."""
        return base.StoreCapabilities(durable=True, shared=True)

    @property
    def schema(self) -> str:
        """The schema holding the ``schedules`` table."""
        return self._schema

    def _sql(self, text: LiteralString) -> sql.Composed:
        return sql.SQL(text).format(schema=sql.Identifier(self._schema))

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)
        if self._ready:
            return conn
        try:
            with conn.transaction():
                # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalogue:
                # nodes starting together take turns on a lock named after the schema.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", ("taskengine:" + self._schema,)
                )
                for statement in _DDL:
                    conn.execute(self._sql(statement))
        except BaseException:
            conn.close()
            raise
        self._ready = True
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                yield self._conn
            except psycopg.Error as exc:
                # A broken connection is dropped and made anew by the next call.
                if self._conn is not None and self._conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        self._conn.close()
                    self._conn = None
                raise errors.StoreError(f"schedule store (PostgreSQL): {exc}") from exc

    def open(self) -> None:
        """Connect and create the schema and table if needed.

        Raises:
            StoreError: the server cannot be reached or refuses.
        """
        with self._connection():
            pass

    def close(self) -> None:
        """Close the connection; a later call connects again."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    def now(self) -> datetime | None:
        """The database server's current time, to the millisecond."""
        with self._connection() as conn:
            row = conn.execute(_NOW).fetchone()
        assert row is not None
        return clock.from_millis(int(row[0]))

    def _read(self, conn: psycopg.Connection[Any], schedule_id: str) -> ScheduleRecord | None:
        row = conn.execute(self._sql(_SELECT), (schedule_id,)).fetchone()
        if row is None:
            return None
        return ScheduleRecord(schedule_id=row[0], times_key=row[1], slots=decode_slots(row[2]))

    def get(self, schedule_id: str) -> ScheduleRecord | None:
        """The stored record, or None."""
        with self._connection() as conn:
            return self._read(conn, schedule_id)

    def insert_or_get(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store ``record`` unless the id is stored; return the stored record."""
        with self._connection() as conn:
            conn.execute(self._sql(_INSERT), record_row(record))
            stored = self._read(conn, record.schedule_id)
        # Deleted between the two statements by another node: ours is what counts then.
        return record if stored is None else stored

    def replace(self, record: ScheduleRecord) -> None:
        """Store ``record`` over whatever is stored."""
        with self._connection() as conn:
            conn.execute(self._sql(_UPSERT), record_row(record))

    def compare_and_set(self, expected: ScheduleRecord, new: ScheduleRecord) -> bool:
        """Store ``new`` if the row still has ``expected``'s times and next slot (one UPDATE)."""
        if expected.next_trigger is None:
            return False
        with self._connection() as conn:
            cursor = conn.execute(
                self._sql(_CAS),
                compare_and_set_parameters(expected, new),
            )
            return cursor.rowcount == 1

    def delete(self, schedule_id: str) -> bool:
        """Forget a schedule."""
        with self._connection() as conn:
            return conn.execute(self._sql(_DELETE), (schedule_id,)).rowcount == 1
