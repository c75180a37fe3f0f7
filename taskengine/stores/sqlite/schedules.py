"""``SqliteScheduleStore``: scheduler slots in a ``SqliteStore`` file (``stores/schedules.py``)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Final

from taskengine.core import errors
from taskengine.stores import base
from taskengine.stores.schedules import (
    ScheduleRecord,
    compare_and_set_parameters,
    decode_slots,
    record_row,
)
from taskengine.stores.sqlite import schema

__all__ = ["SqliteScheduleStore"]


_DRIVER_ERRORS: Final = (sqlite3.Error, OverflowError)


class SqliteScheduleStore:
    """Schedule slots in the ``schedules`` table of a ``SqliteStore`` file.

    It opens its own connection; each write is one ``BEGIN IMMEDIATE`` transaction, so the
    compare-and-set also holds between processes on one host.  The file and its schema are
    created or checked by ``SqliteStore.open`` (the same refusal of foreign or newer files).

    Args:
        path: the database file.
        busy_timeout: seconds a write waits for another connection's lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Durable, one host."""
        return base.StoreCapabilities(durable=True, shared=False)

    def open(self) -> None:
        """Create or check the file (through ``SqliteStore``) and connect.

        Raises:
            StoreError: the file cannot be opened or is not a taskengine database.
        """
        from taskengine.stores.sqlite.files import sqlite_uri
        from taskengine.stores.sqlite.store import SqliteStore

        with self._lock:
            if self._conn is not None:
                return
            tasks = SqliteStore(self._path, busy_timeout=self._busy_timeout)
            tasks.open()  # creates the file 0600 and the schema, or upgrades / refuses it
            tasks.close()
            try:
                self._conn = sqlite3.connect(
                    sqlite_uri(self._path),
                    uri=True,
                    timeout=self._busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise errors.StoreError(f"cannot open {self._path}: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def now(self) -> datetime | None:
        """None: one host, one clock."""
        return None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.open()
        with self._lock:
            conn = self._conn
            if conn is None:
                raise errors.StoreError(f"cannot use {self._path}: the schedule store is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            except _DRIVER_ERRORS as exc:
                raise errors.StoreError(f"schedule store {self._path}: {exc}") from exc

    @staticmethod
    def _read(conn: sqlite3.Connection, schedule_id: str) -> ScheduleRecord | None:
        row = conn.execute(schema.SELECT_SCHEDULE, (schedule_id,)).fetchone()
        if row is None:
            return None
        return ScheduleRecord(schedule_id=row[0], times_key=row[1], slots=decode_slots(row[2]))

    def get(self, schedule_id: str) -> ScheduleRecord | None:
        """The stored record, or None."""
        with self._transaction() as conn:
            return self._read(conn, schedule_id)

    def insert_or_get(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store ``record`` unless the id is stored; return the stored record."""
        with self._transaction() as conn:
            stored = self._read(conn, record.schedule_id)
            if stored is not None:
                return stored
            conn.execute(schema.UPSERT_SCHEDULE, record_row(record))
            return record

    def replace(self, record: ScheduleRecord) -> None:
        """Store ``record`` over whatever is stored."""
        with self._transaction() as conn:
            conn.execute(schema.UPSERT_SCHEDULE, record_row(record))

    def compare_and_set(self, expected: ScheduleRecord, new: ScheduleRecord) -> bool:
        """Store ``new`` if the stored record has ``expected``'s times and next slot."""
        if expected.next_trigger is None:
            return False  # nothing is due on a finished schedule
        with self._transaction() as conn:
            cursor = conn.execute(
                schema.CAS_SCHEDULE,
                compare_and_set_parameters(expected, new),
            )
            return cursor.rowcount == 1

    def delete(self, schedule_id: str) -> bool:
        """Forget a schedule."""
        with self._transaction() as conn:
            return conn.execute(schema.DELETE_SCHEDULE, (schedule_id,)).rowcount == 1
