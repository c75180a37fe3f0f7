"""The schedule store: where ``TaskScheduler`` keeps each schedule's next slots.

A schedule's record is its id, the fingerprint of its times and one pending slot per time.
Every firing is a compare-and-set: a node fires a slot only if it moved the stored record from
the slots it read to the slots after the firing, so among all schedulers sharing a store each
slot fires once.  The slot is consumed *before* the callback runs: a process that dies in a
callback neither blocks later slots nor repeats that one after a restart.

Implementations: ``MemoryScheduleStore`` (in-process), ``SqliteScheduleStore`` (the
``schedules`` table of a ``SqliteStore`` file) and ``PgScheduleStore`` (``pg_schedules``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

import attrs

from taskengine.core import clock, errors
from taskengine.stores import base
from taskengine.stores.sqlite import schema

__all__ = [
    "MemoryScheduleStore",
    "ScheduleRecord",
    "ScheduleStore",
    "SqliteScheduleStore",
    "compare_and_set_parameters",
    "decode_slots",
    "encode_slots",
    "record_row",
]


@attrs.frozen(kw_only=True)
class ScheduleRecord:
    """The stored state of one schedule.

    Attributes:
        schedule_id: the id given to ``add_task``.
        times_key: ``scheduler_times.fingerprint`` of its times.
        slots: the next due time of each of its times (None: that one-shot has fired).
    """

    schedule_id: str
    times_key: str
    slots: tuple[datetime | None, ...]

    @property
    def next_trigger(self) -> datetime | None:
        """The earliest pending slot (the one the compare-and-set is keyed on)."""
        pending = [slot for slot in self.slots if slot is not None]
        return min(pending) if pending else None


def encode_slots(slots: tuple[datetime | None, ...]) -> str:
    """The JSON text of slots as integer milliseconds (null for a fired one-shot)."""
    return json.dumps([None if s is None else clock.to_millis(s) for s in slots])


def decode_slots(text: str) -> tuple[datetime | None, ...]:
    """The slots of ``encode_slots`` text.

    Raises:
        StoreError: the text is not a list of integers and nulls.
    """
    try:
        values = json.loads(text)
        if not isinstance(values, list) or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values
        ):
            raise ValueError("expected a list of integers and nulls")
        return tuple(None if v is None else clock.from_millis(v) for v in values)
    except (ValueError, OverflowError) as exc:
        raise errors.StoreError(f"undecodable schedule slots {text[:80]!r}: {exc}") from exc


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else clock.to_millis(moment)


def record_row(record: ScheduleRecord) -> tuple[object, ...]:
    """The values of a SQL store's ``(id, times_key, slots, next_trigger)`` columns."""
    return (
        record.schedule_id,
        record.times_key,
        encode_slots(record.slots),
        _ms(record.next_trigger),
    )


def compare_and_set_parameters(expected: ScheduleRecord, new: ScheduleRecord) -> tuple[object, ...]:
    """The parameters of a SQL store's compare-and-set statement.

    The new slot's values first, then the fence: the id, the times key and the slot read.
    """
    return (
        _ms(new.next_trigger),
        encode_slots(new.slots),
        new.times_key,
        expected.schedule_id,
        expected.times_key,
        _ms(expected.next_trigger),
    )


@runtime_checkable
class ScheduleStore(Protocol):
    """A persistence backend for schedule slots.  Every method is atomic."""

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Whether slots survive a restart (durable) and are shared between nodes."""
        ...

    def open(self) -> None:
        """Connect and create the table if needed; calling it again does nothing."""
        ...

    def close(self) -> None:
        """Release connections; calling it again does nothing."""
        ...

    def now(self) -> datetime | None:
        """The store's own current time (a database's), or None to use the scheduler's clock."""
        ...

    def get(self, schedule_id: str) -> ScheduleRecord | None:
        """The stored record, or None."""
        ...

    def insert_or_get(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store ``record`` unless the id is stored; return the stored record either way."""
        ...

    def replace(self, record: ScheduleRecord) -> None:
        """Store ``record`` whatever is stored under its id (its times changed)."""
        ...

    def compare_and_set(self, expected: ScheduleRecord, new: ScheduleRecord) -> bool:
        """Store ``new`` only if the stored record still has ``expected``'s times and next slot."""
        ...

    def delete(self, schedule_id: str) -> bool:
        """Forget a schedule; whether there was one."""
        ...


class MemoryScheduleStore:
    """Schedule slots in a dictionary of this process: not durable, thread-safe.

    Several schedulers in one process given the same instance fire each slot once between them.
    """

    def __init__(self) -> None:
        self._records: dict[str, ScheduleRecord] = {}
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Neither durable nor shared between processes."""
        return base.StoreCapabilities(durable=False, shared=False)

    def open(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to close; the records stay for another scheduler in this process."""

    def now(self) -> datetime | None:
        """None: the scheduler's clock is the time."""
        return None

    def get(self, schedule_id: str) -> ScheduleRecord | None:
        """The stored record, or None."""
        with self._lock:
            return self._records.get(schedule_id)

    def insert_or_get(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store ``record`` unless the id is stored; return the stored record."""
        with self._lock:
            return self._records.setdefault(record.schedule_id, record)

    def replace(self, record: ScheduleRecord) -> None:
        """Store ``record`` over whatever is stored."""
        with self._lock:
            self._records[record.schedule_id] = record

    def compare_and_set(self, expected: ScheduleRecord, new: ScheduleRecord) -> bool:
        """Store ``new`` if the stored record has ``expected``'s times and next slot."""
        with self._lock:
            stored = self._records.get(expected.schedule_id)
            if (
                stored is None
                or stored.times_key != expected.times_key
                or stored.next_trigger != expected.next_trigger
            ):
                return False
            self._records[expected.schedule_id] = new
            return True

    def delete(self, schedule_id: str) -> bool:
        """Forget a schedule."""
        with self._lock:
            return self._records.pop(schedule_id, None) is not None


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
        from taskengine.stores.sqlite.store import SqliteStore, sqlite_uri

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


def for_target(target: object) -> tuple[ScheduleStore, bool]:
    """The schedule store for what ``TaskScheduler`` was given, and whether the scheduler owns it.

    ``None`` or a non-durable task store: a new ``MemoryScheduleStore``.  A ``SqliteStore``: its
    file's ``schedules`` table.  A shared store with ``dsn`` and ``schema`` (``PostgresStore``):
    a ``PgScheduleStore`` on that schema.  An engine: the same for its ``store``.  A
    ``ScheduleStore``: itself (not owned: the caller closes it).

    Raises:
        TaskValidationError: the target is none of these, or a durable store of a kind that
            has no schedule store.
    """
    from taskengine.stores.sqlite.store import SqliteStore

    if target is None:
        return MemoryScheduleStore(), True
    if isinstance(target, ScheduleStore):
        return target, False
    store = getattr(target, "store", None) if not isinstance(target, base.TaskStore) else target
    if not isinstance(store, base.TaskStore):
        raise errors.TaskValidationError(
            "engine_or_store", target, "expected a TaskEngine, a task store or a ScheduleStore"
        )
    if isinstance(store, SqliteStore):
        return SqliteScheduleStore(store.path), True
    dsn, pg_schema = getattr(store, "dsn", None), getattr(store, "schema", None)
    if store.capabilities.shared and isinstance(dsn, str) and isinstance(pg_schema, str):
        from taskengine.stores.postgres.schedules import PgScheduleStore

        return PgScheduleStore(dsn, pg_schema), True
    if not store.capabilities.durable:
        return MemoryScheduleStore(), True
    raise errors.TaskValidationError(
        "engine_or_store", target, "this durable store has no schedule store; pass a ScheduleStore"
    )
