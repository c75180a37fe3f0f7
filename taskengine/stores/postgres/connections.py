"""Connections of ``PostgresStore``: a pool that reconnects, the LISTEN thread, schema setup.

The pool is ``psycopg_pool``'s.  A connection that failed is never lent again: it is discarded,
with every idle one (they most likely failed the same way), and the pool connects anew in the
background, so a dropped connection or a restarted server costs the calls made during the
outage a ``StoreError`` each (after at most ``connect_timeout``) and nothing more.  Backing off
between calls is the caller's business (the engine's reactor and sweeper already back off on
``StoreError``); the listener, which has no caller, backs off by itself.

A silent partition (packets dropped, no reset) is noticed on both ends within about the lease:
the client sets TCP keepalives and ``tcp_user_timeout`` from ``lease_timeout``, and each session
asks the server for the same keepalives plus ``idle_in_transaction_session_timeout``, so a
transaction cut off mid-way does not keep its row locks (and the claims they guard) for hours.

Importing this module imports psycopg and psycopg_pool: ``postgres.py`` imports it only when a
store is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg import sql

from taskengine.core import errors
from taskengine.stores.postgres import schema as schema_sql

__all__ = [
    "ConnectionPool",
    "Listener",
    "connection_kwargs",
    "create_or_check_schema",
    "redact",
    "session_settings",
]

log = logging.getLogger(__name__)

#: Connections kept open while idle, and the most open at once (callers beyond wait for one,
#: up to ``connect_timeout``).  A node's engine needs two at a time (reactor and lease keeper;
#: the listener has its own); the rest serve the application's calls, whose short
#: transactions gain little from more.
MIN_SIZE: Final = 1
MAX_SIZE: Final = 8
#: Seconds an extra connection (above ``MIN_SIZE``) stays open unused.
MAX_IDLE_SECONDS: Final = 60.0
#: Seconds a background reconnection keeps trying before its slot is given up (at least the
#: connect timeout).
RECONNECT_GIVE_UP: Final = 3.0
#: Background threads of the pool that connect and discard connections.
WORKERS: Final = 2
#: Seconds ``close`` waits for those threads (one stuck connecting is a daemon and is left).
CLOSE_TIMEOUT: Final = 1.0
#: First and largest pause of the listener between reconnection attempts.
LISTEN_RETRY_FIRST: Final = 0.1
LISTEN_RETRY_MAX: Final = 5.0
#: How often the listener looks at its stop flag while no notification comes (``notifies(timeout=)``
#: needs psycopg 3.2).
LISTEN_TICK: Final = 0.5


def connection_kwargs(
    application_name: str, connect_timeout: float, lease_timeout: float
) -> dict[str, Any]:
    """Connection arguments of psycopg: autocommit, and dead-peer detection within the lease.

    Keepalive probes start after a third of the lease without traffic and three unanswered
    ones (half the lease) end the connection; ``tcp_user_timeout`` ends it when sent data
    stays unacknowledged for the lease.  Either way a node cut off from the server gets an
    error instead of waiting on a socket, by when its claims are lost anyway.
    """
    return {
        "autocommit": True,
        "application_name": application_name,
        "connect_timeout": max(1, round(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": max(1, int(lease_timeout / 3)),
        "keepalives_interval": max(1, int(lease_timeout / 6)),
        "keepalives_count": 3,
        "tcp_user_timeout": _millis(lease_timeout),
    }


def session_settings(lease_timeout: float) -> dict[str, str]:
    """Server-side settings of each session (``set_config``; any role may set them).

    The server's end needs its own dead-peer detection: a client that vanishes mid-transaction
    leaves the session idle in transaction, holding the row locks of what it was writing;
    ``idle_in_transaction_session_timeout`` ends it (rolling back) after the lease.
    """
    return {
        "idle_in_transaction_session_timeout": str(_millis(lease_timeout)),
        "tcp_keepalives_idle": str(max(1, int(lease_timeout / 3))),
        "tcp_keepalives_interval": str(max(1, int(lease_timeout / 6))),
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": str(_millis(lease_timeout)),
    }


def _millis(seconds: float) -> int:
    # Below a second a busy but healthy network could trip it.
    return max(1000, round(seconds * 1000))


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
    """Autocommit connections whose ``search_path`` is the store's schema (thread-safe).

    A ``psycopg_pool.ConnectionPool`` underneath, made on first use (so a store that is never
    used opens nothing) and made again after ``close``/``reopen`` or a fork.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        application_name: str,
        connect_timeout: float,
        lease_timeout: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._name = f"taskengine-{schema}"
        self._timeout = connect_timeout
        self._kwargs = connection_kwargs(application_name, connect_timeout, lease_timeout)
        self._settings = session_settings(lease_timeout)
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        #: Pools inherited through fork: their sockets are the parent's, so they are neither
        #: used nor closed here (closing would end the parent's sessions), only kept referenced.
        self._inherited: list[psycopg_pool.ConnectionPool[psycopg.Connection[Any]]] = []
        self._pid = os.getpid()
        self._closed = False

    def connect(self, *, with_search_path: bool = True) -> psycopg.Connection[Any]:
        """A new connection outside the pool (the caller owns it).

        Raises:
            StoreError: the server cannot be reached or refused the connection.
        """
        try:
            conn = psycopg.connect(self._dsn, **self._kwargs)
        except psycopg.Error as exc:
            raise errors.StoreError(
                f"cannot connect to PostgreSQL ({redact(self._dsn)}): {exc}"
            ) from exc
        try:
            self._configure(conn, with_search_path=with_search_path)
        except psycopg.Error as exc:
            conn.close()
            raise errors.StoreError(f"cannot set up a PostgreSQL session: {exc}") from exc
        return conn

    def _configure(self, conn: psycopg.Connection[Any], *, with_search_path: bool = True) -> None:
        settings = dict(self._settings)
        if with_search_path:
            settings["search_path"] = sql.Identifier(self._schema).as_string(conn)
        # One round trip, whatever the number of settings.
        calls = sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Placeholder())
            for name in settings
        )
        conn.execute(sql.SQL("SELECT {}").format(calls), list(settings.values()))

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Lend a connection; one left broken is discarded with every idle one.

        Raises:
            StoreError: the store is closed, or no connection came within ``connect_timeout``.
        """
        pool = self._current()
        try:
            conn = pool.getconn(timeout=self._timeout)
        except psycopg_pool.PoolClosed as exc:
            raise errors.StoreError("the PostgreSQL store is closed") from exc
        except psycopg_pool.PoolTimeout as exc:
            raise errors.StoreError(
                f"cannot connect to PostgreSQL ({redact(self._dsn)}): no connection within "
                f"{self._timeout:g}s (the server is unreachable, refuses connections, or every "
                f"one of the {MAX_SIZE} connections stayed busy)"
            ) from exc
        try:
            yield conn
        finally:
            broken = conn.broken or conn.closed
            # A connection returned mid-transaction is rolled back by the pool.
            pool.putconn(conn)
            if broken:
                # The server or the network dropped this one: its idle siblings most likely
                # went the same way, and each would cost a caller one more error.
                pool.drain()

    def _current(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        with self._lock:
            if self._closed:
                raise errors.StoreError("the PostgreSQL store is closed")
            if self._pid != os.getpid():
                if self._pool is not None:
                    self._inherited.append(self._pool)
                self._pool, self._pid = None, os.getpid()
            if self._pool is None:
                self._pool = self._new_pool()
            return self._pool

    def _new_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        return psycopg_pool.ConnectionPool(
            self._dsn,
            kwargs=self._kwargs,
            min_size=MIN_SIZE,
            max_size=MAX_SIZE,
            open=True,
            configure=self._configure,
            name=self._name,
            timeout=self._timeout,
            max_idle=MAX_IDLE_SECONDS,
            # Give up a failing slot soon: the next caller that waits makes a new one at once,
            # where a slot kept would retry with a backoff that doubles (up to half the timeout).
            reconnect_timeout=max(RECONNECT_GIVE_UP, self._timeout),
            num_workers=WORKERS,
        )

    def close(self) -> None:
        """Close every idle connection; lent ones are closed when they come back."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            forked = self._pid != os.getpid()
        if pool is not None and not forked:
            pool.close(timeout=CLOSE_TIMEOUT)

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
