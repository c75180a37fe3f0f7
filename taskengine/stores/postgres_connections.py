"""Connections of ``PostgresStore``: a pool that reconnects, the LISTEN thread, schema setup.

A connection that failed is never reused: it is closed and the next call connects again (with
``connect_timeout``), so a dropped connection or a restarted server costs the calls made during
the outage a ``StoreError`` each and nothing more.  Backing off between tries is the caller's
business (the engine's reactor and sweeper already back off on ``StoreError``); the listener,
which has no caller, backs off by itself.

Importing this module imports psycopg: ``postgres.py`` imports it only when a store is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import psycopg
from psycopg import sql

from taskengine import errors
from taskengine.stores import postgres_schema as schema_sql

__all__ = ["ConnectionPool", "Listener", "create_or_check_schema", "redact"]

log = logging.getLogger(__name__)

#: Idle connections kept for reuse (more are opened under load, then closed).
MAX_IDLE: Final = 4
#: First and largest pause of the listener between reconnection attempts.
LISTEN_RETRY_FIRST: Final = 0.1
LISTEN_RETRY_MAX: Final = 5.0
#: How often the listener looks at its stop flag while no notification comes (``notifies(timeout=)``
#: needs psycopg 3.2).
LISTEN_TICK: Final = 0.5


def redact(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>"
    params.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in sorted(params.items()))


def create_or_check_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the schema and its tables, or check its version (inside a transaction).

    An advisory lock serialises nodes that start at once.  Other tables in the schema (a
    scheduler's, for instance) are left alone.

    Raises:
        SchemaVersionError: the schema was written by a newer taskengine.
        StoreError: the schema has a foreign or half-made layout.
    """
    name = sql.Identifier(schema)
    conn.execute(schema_sql.LOCK_SCHEMA, (f"taskengine.{schema}",))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
    tables = {row[0] for row in conn.execute(schema_sql.LIST_TABLES, (schema,))}
    if not tables & {"tasks", "schema_version"}:
        for statement in schema_sql.DDL:
            conn.execute(statement)
        conn.execute(schema_sql.INSERT_VERSION, (schema_sql.SCHEMA_VERSION,))
        return
    if "schema_version" not in tables or "tasks" not in tables:
        raise errors.StoreError(
            f"schema {schema!r} has a tasks or schema_version table but not both; "
            "it is not a taskengine schema"
        )
    row = conn.execute(schema_sql.SELECT_VERSION).fetchone()
    version = None if row is None else row[0]
    if version is None:
        raise errors.StoreError(f"schema {schema!r} records no schema version")
    if version > schema_sql.SCHEMA_VERSION:
        raise errors.SchemaVersionError(
            f"schema {schema!r} has version {version}, newer than version "
            f"{schema_sql.SCHEMA_VERSION} that this taskengine understands; upgrade taskengine"
        )


class ConnectionPool:
    """Autocommit connections whose ``search_path`` is the store's schema (thread-safe)."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        application_name: str,
        connect_timeout: float,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": application_name,
            "connect_timeout": max(1, round(connect_timeout)),
            # Notice a dead server on an idle connection (the listener's especially).
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._pid = os.getpid()
        self._closed = False

    def connect(self, *, with_search_path: bool = True) -> psycopg.Connection[Any]:
        """A new connection (the caller owns it).

        Raises:
            StoreError: the server cannot be reached or refused the connection.
        """
        try:
            conn = psycopg.connect(self._dsn, **self._kwargs)
        except psycopg.Error as exc:
            raise errors.StoreError(
                f"cannot connect to PostgreSQL ({redact(self._dsn)}): {exc}"
            ) from exc
        if with_search_path:
            try:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
            except psycopg.Error as exc:
                conn.close()
                raise errors.StoreError(f"cannot use schema {self._schema!r}: {exc}") from exc
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Lend a connection; one left broken or mid-transaction is closed, not returned.

        Raises:
            StoreError: the store is closed, or connecting failed.
        """
        conn = self._take()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _take(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._closed:
                raise errors.StoreError("the PostgreSQL store is closed")
            if self._pid != os.getpid():
                # Forked: the parent's sockets are not ours; forget them without a goodbye
                # (closing would end the parent's sessions).
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self.connect()

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        stale: list[psycopg.Connection[Any]] = []
        with self._lock:
            if reusable and not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
            if conn.broken:
                # The server or the network dropped this one: its idle siblings most likely
                # went the same way, and each would cost a caller one more error.
                stale, self._idle = self._idle, []
        for each in (conn, *stale):
            with contextlib.suppress(psycopg.Error):
                each.close()

    def close(self) -> None:
        """Close every idle connection; lent ones are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        if self._pid != os.getpid():
            return
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def reopen(self) -> None:
        """Accept lending again after ``close``."""
        with self._lock:
            self._closed = False


class Listener:
    """A thread that LISTENs on one channel and hands each payload to a callback.

    After every (re)connection ``on_connected`` runs, so the owner can look for work whose
    notification was missed while the listener was away: NOTIFY only wakes, polling finds.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        channel: str,
        on_payload: Callable[[str], None],
        on_connected: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._channel = channel
        self._on_payload = on_payload
        self._on_connected = on_connected
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="taskengine-pg-listener", daemon=True
        )
        #: Set while a LISTEN session is established (for tests and stats).
        self.listening = threading.Event()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0, poke: Callable[[], None] | None = None) -> None:
        """End the thread; ``poke`` (sending it a notification) makes that immediate.

        Without a poke, or when it fails, the thread ends within about ``LISTEN_TICK``.
        """
        self._stop.set()
        if poke is not None and self.listening.is_set():
            try:
                poke()
            except (errors.StoreError, psycopg.Error):
                log.debug("could not poke the listener; it stops at its next tick")
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._pool.connect(with_search_path=False)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self.listening.set()
                if backoff:
                    log.warning("PostgreSQL LISTEN session re-established")
                backoff = 0.0
                self._on_connected()
                while not self._stop.is_set():
                    for notify in conn.notifies(timeout=LISTEN_TICK):
                        self._deliver(notify.payload)
            except (errors.StoreError, psycopg.Error):
                if not backoff:
                    log.warning("PostgreSQL LISTEN session lost; reconnecting", exc_info=True)
                backoff = min(LISTEN_RETRY_MAX, max(LISTEN_RETRY_FIRST, backoff * 2))
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
            if backoff:
                self._stop.wait(backoff)

    def _deliver(self, payload: str) -> None:
        try:
            self._on_payload(payload)
        except Exception:
            log.exception("a PostgreSQL notification handler raised; the listener goes on")
