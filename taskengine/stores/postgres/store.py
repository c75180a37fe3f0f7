"""PostgresStore: several engine nodes (processes or machines) share one task table.

Size: the module is one class, the store side of the cluster protocol below, already cut down
to it: the SQL is in ``schema.py`` and the connection pool, the LISTEN thread and the schema
creation in ``connections.py``.  Its two halves, the ``TaskStore`` methods and the shared-store
duties (leases, NOTIFY wakeups, termination requests), use the same incarnation
(``claim_token``), lease length and NOTIFY channel, and every method goes through one
transaction helper (a connection found dead at ``BEGIN`` replaced once); a claim that one
half writes, the other renews and expires.  Split into mixins, each half would depend on the
other's private state.

PostgreSQL is the whole cluster protocol; there is no other channel between nodes.

* **Claims** lock due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` and turn them processing
  in the same short transaction, so two nodes never take one attempt and no lock is held while
  a handler runs.
* **Leases**: a claim sets ``lease_until = now() + lease_timeout`` in database time and records
  the claiming store's ``claim_token`` (one per ``PostgresStore`` object, so a node restarted
  under the same identity is a new incarnation); the owning node renews the leases of the
  attempts it runs every ``heartbeat_interval``; any node re-queues a processing task whose
  lease ended (the attempt counts, ``WorkerCrashedError``) at the due time it had when it was
  claimed, through the engine's fenced writes, so a late write of the node that lost the claim
  changes nothing.  A starting node ends at once the leases its identity's earlier incarnations
  left behind.
* **Wakeups**: creating (or re-queueing) a task sends ``NOTIFY``; every node LISTENs and looks
  for due work at once.  The engine's one-second poll still finds everything if a notification
  is lost.
* **Connection loss** costs the calls made during it a ``StoreError`` each; every later call
  connects again.  The engine keeps unwritten outcomes and retries them with backoff.

Trust boundary.  Payloads and results are cloudpickle blobs, which run code when decoded:
**anyone who can write the task table (or send NOTIFY on its channel) can run code, or stop
attempts, as the engine's user on every node.**  Give the engines a role that owns only their
schema, and keep the DSN (it may carry a password) out of logs; error messages here never show
the password.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import re
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, LiteralString

from taskengine.core import clock, cursor, errors, models, transitions
from taskengine.stores import base

if TYPE_CHECKING:
    import psycopg

    from taskengine.stores.postgres import connections as postgres_connections

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

_SCHEMA_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
_WAKE: Final = "wake"
_TERMINATE: Final = "terminate"
#: A notification that only wakes listeners up (to let a stopping one end at once).
_NOTHING: Final = "nothing"
#: A notification naming tasks a commit finished or deleted: ``done <id> <id> ...``.
_DONE: Final = "done"
#: Ids one ``done`` notification carries at most (a payload must stay under 8,000 bytes).
_DONE_IDS: Final = 200
Status = models.TaskStatus


def _driver() -> tuple[Any, Any, Any]:
    """psycopg, and the modules of this store that need it, imported on first use."""
    try:
        psycopg = importlib.import_module("psycopg")
        connections = importlib.import_module("taskengine.stores.postgres.connections")
    except ImportError as exc:
        raise errors.StoreError(
            f"PostgresStore needs the psycopg driver and psycopg_pool ({exc.name} is missing): "
            "install the extra 'taskengine[postgres]'"
        ) from exc
    return (
        psycopg,
        connections,
        importlib.import_module("taskengine.stores.postgres.schema"),
    )


#: The shortest lease and renewal interval accepted: below them a renewal cannot make a round
#: trip to the server in time, and the renewal thread would spin.
MIN_LEASE_TIMEOUT: Final = 0.1
MIN_HEARTBEAT_INTERVAL: Final = 0.01
#: The longest lease, renewal interval and connect timeout accepted: one day.  A lease becomes
#: a PostgreSQL ``interval`` (and socket timeouts in milliseconds); far larger values would
#: overflow them and make every claim fail, and no node needs a day to prove it is alive.
MAX_SECONDS: Final = 86_400.0


def _positive_seconds(name: str, value: object, minimum: float = 0.0) -> float:
    too_long = f"expected at most {MAX_SECONDS:.0f} seconds"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.TaskValidationError(name, value, "expected seconds > 0")
    try:
        seconds = float(value)
    except OverflowError as exc:  # an int beyond any float
        raise errors.TaskValidationError(name, value, too_long) from exc
    if not math.isfinite(seconds) or seconds <= 0:
        raise errors.TaskValidationError(name, value, "expected seconds > 0")
    if seconds < minimum:
        raise errors.TaskValidationError(name, value, f"expected at least {minimum} seconds")
    if seconds > MAX_SECONDS:
        raise errors.TaskValidationError(name, value, too_long)
    return seconds


class PostgresStore:
    """A durable task store in PostgreSQL that several engine nodes share (thread-safe).

    Args:
        dsn: a libpq connection string or URI (``postgresql://user@host:5432/db``).
        schema: the schema holding the tables; created on first use.  Letters, digits and
            ``_`` only (it also names the NOTIFY channel).
        lease_timeout: seconds after a node's last renewal before other nodes re-queue its
            processing tasks.  Shorter recovers faster from a dead node; longer tolerates
            longer pauses (GC, SIGSTOP, a slow network) before an attempt runs twice.  At
            least 0.1 and at most 86 400 (one day).
        heartbeat_interval: seconds between lease renewals, at least 0.01 and shorter than
            ``lease_timeout``; ``lease_timeout / 3`` by default.
        connect_timeout: seconds a call waits for a connection before ``StoreError``; at most
            86 400.
        application_name: the ``application_name`` of every connection (``pg_stat_activity``).

    Raises:
        TaskValidationError: an argument is malformed.
        StoreError: psycopg is not installed (``pip install 'taskengine[postgres]'``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "taskengine",
        lease_timeout: float = 30.0,
        heartbeat_interval: float | None = None,
        connect_timeout: float = 5.0,
        application_name: str = "taskengine",
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise errors.TaskValidationError("dsn", "<redacted>", "expected a connection string")
        if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
            raise errors.TaskValidationError(
                "schema", schema, "expected letters, digits and _ (at most 48, not first a digit)"
            )
        self._lease = _positive_seconds("lease_timeout", lease_timeout, MIN_LEASE_TIMEOUT)
        beat = self._lease / 3 if heartbeat_interval is None else heartbeat_interval
        self._beat = _positive_seconds("heartbeat_interval", beat, MIN_HEARTBEAT_INTERVAL)
        if self._beat >= self._lease:
            raise errors.TaskValidationError(
                "heartbeat_interval", heartbeat_interval, "must be shorter than lease_timeout"
            )
        seconds = _positive_seconds("connect_timeout", connect_timeout)
        if not isinstance(application_name, str):
            raise errors.TaskValidationError("application_name", application_name, "expected str")
        self._psycopg, connections, self._sql = _driver()
        self._dsn = dsn
        self._schema = schema
        self._channel = f"taskengine.{schema}"
        self._pool: postgres_connections.ConnectionPool = connections.ConnectionPool(
            dsn,
            schema,
            application_name=application_name,
            connect_timeout=seconds,
            lease_timeout=self._lease,
        )
        self._connections = connections
        self._listener: postgres_connections.Listener | None = None
        self._finish_callbacks: list[Callable[[Collection[str]], None]] = []
        self._opened = False
        self._capabilities = base.StoreCapabilities(durable=True, shared=True)
        # Recorded with every claim of this object: renewals touch only this incarnation's
        # claims, so a node restarted under the same identity never keeps its dead run's
        # attempts alive.
        self._token = uuid.uuid4().hex

    # -- properties ------------------------------------------------------------------------

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Durable and shared between engine nodes."""
        return self._capabilities

    @property
    def dsn(self) -> str:
        """The connection string this store was given (it may hold a password)."""
        return self._dsn

    @property
    def schema(self) -> str:
        """The schema holding this store's tables."""
        return self._schema

    @property
    def lease_timeout(self) -> float:
        """Seconds a claim stays valid without renewal."""
        return self._lease

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between this node's lease renewals."""
        return self._beat

    @property
    def claim_token(self) -> str:
        """This store object's incarnation, recorded with each of its claims."""
        return self._token

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the schema and tables if needed, or check their version.

        Raises:
            SchemaVersionError: the schema was written by a newer taskengine.
            StoreError: the server cannot be reached, or the schema holds a broken layout.
        """
        if self._opened:
            return
        self._pool.reopen()
        conn = self._pool.connect(with_search_path=False)
        try:
            with self._driver_errors("create the schema"), conn.transaction():
                self._connections.create_or_check_schema(conn, self._schema)
                self._sql.upgrade(conn)
        finally:
            conn.close()
        self._opened = True

    def close(self) -> None:
        """Stop listening and close every connection; calling it again does nothing."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop(poke=self._poke)
        self._pool.close()
        self._opened = False

    def acquire_dispatch_lock(self, node_identity: str) -> None:
        """Accept every node: nodes coordinate through claims and leases."""

    # -- plumbing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _driver_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise errors.StoreError(f"PostgreSQL: cannot {what}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A transaction; a pooled connection found dead at ``BEGIN`` is replaced once.

        Nothing was sent but ``BEGIN`` then, so trying again on a new connection is safe; a
        failure after that (even during ``COMMIT``) is the caller's ``StoreError``.
        """
        if not self._opened:
            self.open()
        for last in (False, True):
            with contextlib.ExitStack() as stack:
                conn = stack.enter_context(self._pool.connection())
                stack.enter_context(self._driver_errors(what))
                try:
                    stack.enter_context(conn.transaction())
                except self._psycopg.OperationalError:
                    if last:
                        raise
                    continue
                yield conn
                return

    def _fetch(self, what: str, query: LiteralString, params: Any = None) -> list[Any]:
        """Run one read; a read that met a dropped connection is tried once more on a new one."""
        if not self._opened:
            self.open()
        for last in (False, True):
            try:
                with self._pool.connection() as conn, self._driver_errors(what):
                    return conn.execute(query, params).fetchall()
            except errors.StoreError as exc:
                if last or not isinstance(exc.__cause__, self._psycopg.OperationalError):
                    raise
        raise AssertionError("unreachable")

    def _task(self, row: tuple[Any, ...]) -> models.BackgroundTask:
        try:
            return self._sql.from_row(row)  # type: ignore[no-any-return]
        except (ValueError, TypeError) as exc:
            raise errors.StoreError(f"cannot read task {row[0]}: {exc}") from exc

    def _notify(self, conn: psycopg.Connection[Any], payload: str) -> None:
        # Transactional: delivered at commit, and identical ones in one transaction fold.
        conn.execute(self._sql.NOTIFY, (self._channel, payload))

    # -- protocol --------------------------------------------------------------------------

    def insert_many(self, tasks: Sequence[models.BackgroundTask]) -> list[str]:
        """Store new tasks in one transaction; an existing idempotency key returns its task's id.

        Durable when it returns (``synchronous_commit`` as the server has it, ``on`` by
        default): the caller acknowledges the ids.  Tasks without idempotency keys, up to
        ``INSERT_ROWS`` of them, are one statement in autocommit: insert and wake-up together,
        one round trip and one commit (a ``create`` on the web-request path).

        Raises:
            StoreError: a task's id is already stored (nothing is stored), or the write failed.
        """
        if not tasks:
            return []
        try:
            if len(tasks) <= self._sql.INSERT_ROWS and all(
                task.idempotency_key is None for task in tasks
            ):
                self._insert_at_once(tasks)
                return [task.id for task in tasks]
            return self._insert_in_transaction(tasks)
        except errors.StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, self._psycopg.errors.UniqueViolation):
                raise errors.StoreError(
                    "cannot insert tasks: a task id is already stored "
                    f"({cause.diag.message_detail})"
                ) from cause
            raise

    def _insert_row(self, task: models.BackgroundTask) -> tuple[object, ...]:
        return (*self._sql.to_row(task), *self._claim_of(task.status))

    def _insert_at_once(self, tasks: Sequence[models.BackgroundTask]) -> None:
        """Insert and notify in one autocommit statement.

        A pooled connection can turn out dead only once the statement is sent, when it may or
        may not have run; the one retry on a new connection skips ids already stored, so it
        stores each task once either way.
        """
        if not self._opened:
            self.open()
        params = [value for task in tasks for value in self._insert_row(task)]
        params += [self._channel, _WAKE]
        for retry in (False, True):
            query = self._sql.insert_notify_sql(len(tasks), idempotent=retry)
            try:
                with self._pool.connection() as conn, self._driver_errors("insert tasks"):
                    conn.execute(query, params)
                return
            except errors.StoreError as exc:
                if retry or not isinstance(exc.__cause__, self._psycopg.OperationalError):
                    raise

    def _insert_in_transaction(self, tasks: Sequence[models.BackgroundTask]) -> list[str]:
        sql = self._sql
        ids: list[str] = []
        with self._transaction("insert tasks") as conn, conn.cursor() as cur:
            plain = []
            for task in tasks:
                params = self._insert_row(task)
                if task.idempotency_key is None:
                    plain.append(params)
                    ids.append(task.id)
                    continue
                cur.execute(sql.INSERT_KEYED, params)
                inserted = cur.fetchone()
                if inserted is None:
                    found = cur.execute(sql.ID_BY_KEY, (task.idempotency_key,)).fetchone()
                    if found is None:
                        raise errors.StoreError("an idempotency key vanished; try again")
                    ids.append(found[0])
                else:
                    ids.append(task.id)
            if plain:
                cur.executemany(sql.INSERT, plain)
            self._notify(conn, _WAKE)
        return ids

    def _claim_of(self, status: models.TaskStatus) -> tuple[float | None, str | None]:
        """The lease seconds and claim token of a task inserted in ``status``."""
        return (self._lease, self._token) if status is Status.PROCESSING else (None, None)

    def get(self, task_id: str) -> models.BackgroundTask | None:
        """Return the stored record, or None."""
        rows = self._fetch("read a task", self._sql.SELECT_BY_ID, (task_id,))
        return self._task(rows[0]) if rows else None

    def apply(self, writes: Sequence[base.Write]) -> list[bool]:
        """Apply fenced writes in one transaction; for each, whether it applied."""
        if not writes:
            return []
        return self.apply_and_claim(writes, [], clock.from_millis(0), _no_claim)[0]

    def claim_due(
        self,
        task_type: str,
        now: datetime,
        limit: int,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> list[models.BackgroundTask]:
        """Take up to ``limit`` due pending tasks of ``task_type``, oldest due first.

        Rows another node is claiming right now are skipped, never waited for.  An exception
        raised by ``claim`` rolls the whole claim back and propagates unchanged.
        """
        return self.apply_and_claim([], [(task_type, limit)], now, claim)[1][0]

    def apply_and_claim(
        self,
        writes: Sequence[base.Write],
        claims: Sequence[tuple[str, int]],
        now: datetime,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> tuple[list[bool], list[list[models.BackgroundTask]]]:
        """Fenced writes, then ``SKIP LOCKED`` claims, in one transaction (one commit).

        Round trips: ``BEGIN``; every write, every claim (the engine's ``transitions.Claim``
        runs as one ``UPDATE ... RETURNING`` per type) and the wake-up in one pipeline; and
        ``COMMIT``, whatever the number of writes.  Which commits wait for the disk: one that
        carries writes does (outcomes are announced to callers once it returns, so it is
        durable as the server's ``synchronous_commit`` says); one of claims alone does not
        (``synchronous_commit = off``).  A claim lost with the server's last moments leaves its
        task pending to be claimed again, exactly as a lease that ran out does, and any later
        durable commit (the attempt's outcome) flushes the log up to and past the claim.
        """
        statements = [
            self._sql.write_statement(write, self._lease, self._token) for write in writes
        ]
        wanted = [(task_type, limit) for task_type, limit in claims if limit > 0]
        if not statements and not wanted:
            return [], [[] for _ in claims]
        claim_params: tuple[object, ...] = ()
        if isinstance(claim, transitions.Claim):
            claim_params = (claim.node, clock.to_millis(claim.now), self._lease, self._token)
        elif wanted:
            return self._apply_and_claim_each(statements, writes, claims, now, claim)
        wake = any(isinstance(w, base.Update) and w.task.status is Status.PENDING for w in writes)
        sql = self._sql
        now_ms = clock.to_millis(now)
        if not statements and len(wanted) == 1:
            # A claim alone (an attempt starting): one statement, one round trip.
            ((task_type, limit),) = wanted
            # Not retried on a new connection as reads are: the claim may have committed.
            if not self._opened:
                self.open()
            with self._pool.connection() as conn, self._driver_errors("claim tasks"):
                rows = conn.execute(
                    sql.CLAIM_DUE_ALONE, (task_type, now_ms, limit, *claim_params)
                ).fetchall()
            taken = self._claimed_rows(rows)
            return [], [taken if limit > 0 else [] for _, limit in claims]
        with self._transaction("write tasks") as conn:
            with conn.pipeline():
                if not statements:
                    conn.execute(sql.ASYNC_COMMIT)
                written = [conn.cursor() for _ in statements]
                for cur, (query, params) in zip(written, statements, strict=True):
                    cur.execute(query, params)
                claiming: list[Any] = []
                for task_type, limit in claims:
                    if limit <= 0:
                        claiming.append(None)
                        continue
                    cur = conn.cursor()
                    cur.execute(sql.CLAIM_DUE, (task_type, now_ms, limit, *claim_params))
                    claiming.append(cur)
                if wake:
                    self._notify(conn, _WAKE)
                for payload in _done_payloads(writes):
                    self._notify(conn, payload)
            applied = [cur.rowcount == 1 for cur in written]
            claimed = [
                [] if cur is None else self._claimed_rows(cur.fetchall()) for cur in claiming
            ]
        return applied, claimed

    def _claimed_rows(self, rows: list[tuple[Any, ...]]) -> list[models.BackgroundTask]:
        """The tasks of ``CLAIM_DUE``'s rows, in due order (each row ends with its due time)."""
        rows.sort(key=lambda row: (row[-1], row[0]))
        return [self._task(row[:-1]) for row in rows]

    def _apply_and_claim_each(
        self,
        statements: list[tuple[LiteralString, tuple[object, ...]]],
        writes: Sequence[base.Write],
        claims: Sequence[tuple[str, int]],
        now: datetime,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> tuple[list[bool], list[list[models.BackgroundTask]]]:
        """Any other ``claim`` callable: read the due rows, claim each, write what changed."""
        wake = any(isinstance(w, base.Update) and w.task.status is Status.PENDING for w in writes)
        now_ms = clock.to_millis(now)
        sql = self._sql
        claimed: list[list[models.BackgroundTask]] = []
        with self._transaction("write tasks") as conn, conn.cursor() as cur:
            applied = []
            for query, params in statements:
                cur.execute(query, params)
                applied.append(cur.rowcount == 1)
            for task_type, limit in claims:
                if limit <= 0:
                    claimed.append([])
                    continue
                rows = cur.execute(sql.SELECT_DUE, (task_type, now_ms, limit)).fetchall()
                taken = [claim(self._task(row)) for row in rows]
                batches: dict[str, list[tuple[object, ...]]] = {}
                for row, task in zip(rows, taken, strict=True):
                    query, values = sql.changed_update(
                        tuple(row), sql.to_row(task), sql.CLAIM_ASSIGNMENTS
                    )
                    fence = (task.id, row[2], row[15])
                    batches.setdefault(query, []).append(
                        (*values, self._lease, self._token, *fence)
                    )
                for query, param_sets in batches.items():
                    cur.executemany(query, param_sets)
                claimed.append(taken)
            if wake:
                self._notify(conn, _WAKE)
            for payload in _done_payloads(writes):
                self._notify(conn, payload)
        return applied, claimed

    def next_due(self, task_types: Collection[str]) -> datetime | None:
        """The earliest ``date_next_process`` of a pending task of these types."""
        if not task_types:
            return None
        rows = self._fetch("look for due tasks", self._sql.NEXT_DUE, (list(task_types),))
        value = rows[0][0] if rows else None
        return None if value is None else clock.from_millis(value)

    def query(
        self,
        spec: cursor.QuerySpec,
        after: cursor.CursorPosition | None,
        limit: int,
        now: datetime,
    ) -> list[models.BackgroundTask]:
        """A keyset page: tasks matching ``spec`` and visible at ``now``, after ``after``."""
        if limit <= 0:
            return []
        params = cursor.page_parameters(spec, after, limit, clock.to_millis(now))
        query = self._sql.query_sql(spec, keyset=after is not None)
        return [self._task(row) for row in self._fetch("query tasks", query, params)]

    def purge_expired(self, now: datetime, limit: int) -> list[str]:
        """Delete up to ``limit`` tasks whose retention ended, earliest first; return their ids."""
        if limit <= 0:
            return []
        with self._transaction("purge expired tasks") as conn:
            rows = conn.execute(self._sql.PURGE, (clock.to_millis(now), limit)).fetchall()
        return [task_id for task_id, _ in sorted(rows, key=lambda row: (row[1], row[0]))]

    def next_expiry(self) -> datetime | None:
        """The earliest ``date_retain_until`` among stored tasks."""
        rows = self._fetch("look for expiring tasks", self._sql.NEXT_EXPIRY)
        value = rows[0][0] if rows else None
        return None if value is None else clock.from_millis(value)

    def processing(self) -> list[models.BackgroundTask]:
        """All tasks in status processing, on every node."""
        return [self._task(r) for r in self._fetch("list tasks", self._sql.SELECT_PROCESSING)]

    def count_tasks(self, now: datetime) -> list[base.TaskCount]:
        """Visible tasks summarised per ``(type, status)`` in one statement (read-only)."""
        rows = self._fetch("count tasks", self._sql.COUNT_TASKS, (clock.to_millis(now),))
        return [
            base.TaskCount(
                task_type=task_type,
                status=models.TaskStatus(status),
                count=int(count),
                attempts=int(attempts),
                oldest_created=clock.from_millis(created),
                earliest_next_process=None if due is None else clock.from_millis(due),
            )
            for task_type, status, count, attempts, created, due in rows
        ]

    # -- shared-store duties (base.SharedTaskStore) -----------------------------------------

    def renew_leases(self, node_identity: str) -> list[str]:
        """Extend the lease of every task this store claimed for ``node_identity``; return ids.

        Claims that another store object made under the same identity (an earlier run of a
        restarted node, whose attempts died with it) are never renewed.
        """
        params = (self._lease, node_identity, self._token)
        with self._transaction("renew leases") as conn:
            rows = conn.execute(self._sql.RENEW_LEASES, params).fetchall()
        return [row[0] for row in rows]

    def renew_held_leases(self, node_identity: str, task_ids: Collection[str]) -> list[str]:
        """``renew_leases`` for the attempts ``task_ids`` only (those the node runs now)."""
        if not task_ids:
            return []
        params = (self._lease, node_identity, self._token, list(task_ids))
        with self._transaction("renew leases") as conn:
            rows = conn.execute(self._sql.RENEW_HELD_LEASES, params).fetchall()
        return [row[0] for row in rows]

    def expire_earlier_claims(self, node_identity: str) -> list[str]:
        """End the leases of claims of ``node_identity`` made by any other store object.

        A node calls it when it starts: attempts claimed under its identity by an earlier run
        died with that run, so they need not wait for their lease to run out.  Return the ids.
        """
        with self._transaction("expire the claims of an earlier run") as conn:
            rows = conn.execute(
                self._sql.EXPIRE_EARLIER_CLAIMS, (node_identity, self._token)
            ).fetchall()
        return [row[0] for row in rows]

    def expired_claims(self, limit: int) -> list[models.BackgroundTask]:
        """Up to ``limit`` processing tasks whose lease ended (in database time)."""
        return [task for task, _ in self.expired_claims_with_due(limit)]

    def expired_claims_with_due(
        self, limit: int
    ) -> list[tuple[models.BackgroundTask, datetime | None]]:
        """``expired_claims``, each with the due time it had when claimed (None: unknown)."""
        rows = self._fetch("find expired leases", self._sql.SELECT_EXPIRED, (limit,))
        return [
            (self._task(row[:-1]), None if row[-1] is None else clock.from_millis(row[-1]))
            for row in rows
        ]

    def listen(
        self,
        node_identity: str,
        on_wakeup: Callable[[], None],
        on_terminate: Callable[[str], None],
    ) -> None:
        """Start a LISTEN thread: wake on new work; terminate attempts other nodes cancelled.

        ``on_wakeup`` also runs after each (re)connection, to catch up on missed notifications.
        The thread ends at ``close``.
        """
        if self._listener is not None:
            return

        def deliver(payload: str) -> None:
            kind, _, rest = payload.partition(" ")
            if kind == _DONE:
                ids = rest.split()
                for callback in list(self._finish_callbacks):
                    callback(ids)
            elif kind == _TERMINATE:
                task_id, _, node = rest.partition(" ")
                if node == node_identity:
                    on_terminate(task_id)
            elif kind != _NOTHING:
                on_wakeup()

        self._listener = self._connections.Listener(self._pool, self._channel, deliver, on_wakeup)
        self._listener.start()

    def on_finished(self, callback: Callable[[Collection[str]], None]) -> None:
        """Call ``callback`` with the ids of tasks any node finished or deleted.

        Commits that finish or delete tasks send ``NOTIFY done <ids>``; the LISTEN thread
        (started by ``listen``, which every started engine calls) hands the ids over.  Until
        it runs, and across a lost session, nothing is called: the caller keeps polling.
        """
        self._finish_callbacks.append(callback)

    def _poke(self) -> None:
        with self._transaction("wake the listener") as conn:
            self._notify(conn, _NOTHING)

    def request_termination(self, node_identity: str, task_id: str) -> None:
        """Ask ``node_identity`` (through NOTIFY) to kill the worker running ``task_id``."""
        with self._transaction("send a termination request") as conn:
            self._notify(conn, f"{_TERMINATE} {task_id} {node_identity}")

    def __repr__(self) -> str:
        return f"PostgresStore({self._connections.redact(self._dsn)!r}, schema={self._schema!r})"


def _no_claim(task: models.BackgroundTask) -> models.BackgroundTask:
    raise AssertionError("apply() claims nothing")


def _done_payloads(writes: Sequence[base.Write]) -> list[str]:
    """The ``done`` notifications of a commit: the tasks it finishes or deletes."""
    ids = [
        write.task.id if isinstance(write, base.Update) else write.task_id
        for write in writes
        if not isinstance(write, base.Update) or write.task.status.is_final
    ]
    return [
        " ".join([_DONE, *ids[start : start + _DONE_IDS]])
        for start in range(0, len(ids), _DONE_IDS)
    ]
