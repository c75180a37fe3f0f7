"""SqliteStore: the task table in one SQLite file (stdlib ``sqlite3``), the embedded default.

Size: this module is one class, and every method of it follows one discipline of connections
and locks (below: the writer under ``_write_lock`` then ``_state_lock``, one ``BEGIN
IMMEDIATE`` per write with the group-commit riders joining at ``COMMIT``, per-thread readers
invalidated by the open generation, the fork check).  Splitting the class across modules would
put that discipline in one file and the methods that must obey it in others.  What needs none
of the store's state lives beside it: the database file, its modes and the dispatch lock
(``files.py``), out-of-row blobs (``blobs.py``) and fenced writes as batched SQL
(``writing.py``); the SQL text itself is in ``schema.py``.

Durability.  The file is in WAL mode.  With ``synchronous="full"`` (the default) a write that
returned survives a crash of the process and a power loss; ``"normal"`` survives a crash of the
process but may lose the last transactions on a power loss, and is faster.

At ``"full"`` the commits that reach the disk before they return (one fsync of the WAL each)
are those of ``insert_many`` (a ``create`` is acknowledged only then), of ``apply`` and
``purge_expired``, and of ``apply_and_claim`` whenever it carries a write (an outcome, a
cancellation, a release).  A commit of claims alone (``claim_due``, or ``apply_and_claim``
with no write) runs at ``synchronous = NORMAL``: it reaches the operating system, so it
survives a crash of the process, but not the disk.  Losing it at power loss costs nothing
acknowledged: the task is ``pending`` again, with its attempt count from before the claim, and
runs again after the restart (at-least-once; the attempt that ran may run again under the same
number).  The WAL is written in order and fsynced whole, and a frame counts only after every
frame before it checks out, so the next durable commit (or checkpoint, which syncs the WAL
first) takes every earlier claim to the disk too; an outcome is therefore never on the disk
without the claim it finishes.

Group commit.  Callers of ``insert_many`` on several threads share one durable commit: see
``insert_many``; callers that queue while another durable transaction runs (the reactor's
outcomes) ride along in it.

Large blobs.  A payload or result of ``schema.LARGE_BLOB`` bytes or more is stored out of the
task's row (``blobs.py``), written and read in the same transaction (or read snapshot) as the
row; ``status_of`` answers ``wait`` without reading it.

Concurrency.  All writes go through one writer connection guarded by a lock, and each is one
``BEGIN IMMEDIATE`` ... ``COMMIT`` (an explicit ``ROLLBACK`` on any error): the write lock is
taken up front, so a transaction never fails half-way with an instant ``SQLITE_BUSY`` while
upgrading from a read, and another process holding the lock is waited for up to
``busy_timeout`` seconds, after which the call raises ``StoreError``.  Reads use one connection
per thread (read-only, ``query_only``), so in WAL mode they never queue behind a write.
Connections belong to the process that opened them: a store used after ``fork`` raises
``StoreError`` (open a new ``SqliteStore`` in the child instead).

Lifecycle.  The constructor only validates its arguments.  ``open()`` creates the file (mode
0600) if needed, connects, and creates or checks the schema; a file this code does not
understand (garbage, another application's database, a newer schema) is refused with
``StoreError`` naming the path and the reason, and is never modified.  A method called before
``open()`` opens the store implicitly; after ``close()`` methods raise ``StoreError`` until
``open()`` is called again.

Trust boundary.  Payloads and results are cloudpickle blobs, which run code when decoded:
**anyone who can write the database file (or its -wal/-shm files, or the directory holding
them) can run code as the engine's user.**  The file is therefore created 0600 (SQLite gives
-wal and -shm the same mode), and a warning is logged when the file or its directory is
writable by group or others.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Final

from taskengine.core import clock, cursor, errors, models, transitions
from taskengine.stores import base
from taskengine.stores.sqlite import blobs, files, schema, writing

__all__ = ["SqliteStore"]

logger = logging.getLogger(__name__)

_SYNCHRONOUS: Final = {"full": "PRAGMA synchronous = FULL", "normal": "PRAGMA synchronous = NORMAL"}
#: Errors of the driver (binding included) that become ``StoreError``.
_DRIVER_ERRORS: Final = (sqlite3.Error, OverflowError, UnicodeEncodeError)
_NEW, _OPEN, _CLOSED = "new", "open", "closed"


class SqliteStore:
    """A durable, single-node task store in one SQLite file (thread-safe).

    Args:
        path: the database file; created (mode 0600) by ``open()`` if it does not exist.
        synchronous: ``"full"`` (durable across power loss) or ``"normal"`` (durable across a
            crash of the process only).
        busy_timeout: seconds a write waits for another process's lock before ``StoreError``.

    Raises:
        TaskValidationError: an argument is malformed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        busy_timeout: float = 10.0,
    ) -> None:
        try:
            text = os.fspath(path)
        except TypeError as exc:
            raise errors.TaskValidationError("path", path, "expected a file path") from exc
        if not isinstance(text, str) or not text or "\0" in text:
            raise errors.TaskValidationError("path", path, "expected a non-empty file path")
        if not isinstance(synchronous, str) or synchronous not in _SYNCHRONOUS:
            raise errors.TaskValidationError("synchronous", synchronous, "expected full or normal")
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not math.isfinite(busy_timeout)
            or busy_timeout < 0
        ):
            raise errors.TaskValidationError("busy_timeout", busy_timeout, "expected seconds >= 0")
        self._path = os.path.abspath(text)
        self._dispatch_lock: files.DispatchLock | None = None
        self._synchronous = synchronous
        self._busy_timeout = float(busy_timeout)
        self._capabilities = base.StoreCapabilities(durable=True, shared=False)
        # Lock order: _write_lock, then _state_lock.
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._state = _NEW
        self._pid = os.getpid()
        self._generation = 0
        self._writer: sqlite3.Connection | None = None
        # The writer's synchronous level as last set (None: unknown), guarded by _write_lock.
        self._level: str | None = None
        # Callers of insert_many waiting for a group commit, in arrival order (_pending_lock).
        self._pending: list[_Inserts] = []
        self._pending_lock = threading.Lock()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._inherited: list[sqlite3.Connection | None] = []
        self._local = threading.local()

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Durable, not shared between engine nodes."""
        return self._capabilities

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Create or check the file and its schema, and connect; calling it again does nothing.

        Raises:
            SchemaVersionError: the database was written by a newer taskengine.
            StoreError: the file cannot be created or opened, or is not a taskengine database.
        """
        with self._write_lock, self._state_lock:
            if self._state == _OPEN:
                if self._pid == os.getpid():
                    return
                # Forked: keep the parent's connections referenced but never use or close them.
                self._inherited += [self._writer, *(conn for _, conn in self._readers)]
                self._writer, self._readers = None, []
                # Inserts queued by the parent's threads are the parent's to commit.
                self._pending, self._pending_lock = [], threading.Lock()
            created = files.create_file(self._path)
            try:
                writer = self._connect()
            except BaseException:
                if created is not None:
                    files.remove_if_empty(self._path, created)
                raise
            try:
                self._check_schema(writer)
                mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise errors.StoreError(f"cannot open {self._path}: WAL mode refused ({mode})")
                writer.execute(_SYNCHRONOUS[self._synchronous])
                self._level = self._synchronous
                # The writer touches every index on each transition: keep them in memory (the
                # 2 MB default cache is far below the indexes of a large task table).
                writer.execute(f"PRAGMA cache_size = {-blobs.WRITER_CACHE_KIB}")
                writer.execute("BEGIN IMMEDIATE")
                try:
                    version = self._check_schema(writer)
                    if version == 0:
                        for statement in (*schema.DDL, *schema.SCHEDULES_DDL, *schema.BLOBS_DDL):
                            writer.execute(statement)
                        writer.execute(f"PRAGMA user_version = {int(schema.SCHEMA_VERSION)}")
                    elif version < schema.SCHEMA_VERSION:
                        # An older file: upgrade it step by step in this transaction.
                        for step in range(version, schema.SCHEMA_VERSION):
                            for statement in schema.UPGRADES[step]:
                                writer.execute(statement)
                        writer.execute(f"PRAGMA user_version = {int(schema.SCHEMA_VERSION)}")
                    writer.execute("COMMIT")
                finally:
                    if writer.in_transaction:
                        writer.execute("ROLLBACK")
            except BaseException as exc:
                writer.close()
                if created is not None:
                    files.remove_if_empty(self._path, created)
                if isinstance(exc, _DRIVER_ERRORS):
                    raise errors.StoreError(f"cannot open {self._path}: {exc}") from exc
                raise
            files.check_side_files(self._path)
            self._writer = writer
            self._state = _OPEN
            self._pid = os.getpid()
            self._generation += 1

    def acquire_dispatch_lock(self, node_identity: str) -> None:
        """Hold the file's dispatch lock until ``close``.

        The lock follows the file, not the name it was opened by (``files.DispatchLock``): an
        ``flock`` on ``<real path>.lock`` that records the holder's node identity, and on Linux
        an abstract Unix socket named after the file's device and inode, which every hard link
        of the file reaches too.  The kernel drops both when the holder dies, so a crashed
        engine never blocks its successor.

        Raises:
            StoreError: another engine (in this or another process) dispatches from the file.
        """
        self._ensure_open()
        with self._state_lock:
            if self._dispatch_lock is None:
                self._dispatch_lock = files.DispatchLock.acquire(self._path, node_identity)

    def close(self) -> None:
        """Close every connection (waiting for a write in progress); calling it again does nothing.

        In a process forked from the one that opened the store, the inherited connections are
        left alone (closing them could disturb the parent's WAL) and only forgotten.
        """
        with self._write_lock, self._state_lock:
            connections = [self._writer, *(conn for _, conn in self._readers)]
            self._writer, self._readers = None, []
            if self._state == _OPEN and self._pid != os.getpid():
                self._inherited += connections
                connections = []
            self._state = _CLOSED
            if self._dispatch_lock is not None:
                self._dispatch_lock.release()
                self._dispatch_lock = None
            for conn in connections:
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: SQLite never creates the file itself (files.create_file did, mode 0600).
        try:
            return sqlite3.connect(
                files.sqlite_uri(self._path),
                uri=True,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise errors.StoreError(f"cannot open {self._path}: {exc}") from exc

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        """Return the schema version (0: an empty file); refuse a file that is not ours."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > schema.SCHEMA_VERSION:
            raise errors.SchemaVersionError(
                f"cannot open {self._path}: its schema version is {version}, newer than version "
                f"{schema.SCHEMA_VERSION} that this taskengine understands"
            )
        objects = {(kind, name) for kind, name in conn.execute(schema.LIST_OBJECTS)}
        if version == 0 and objects:
            raise errors.StoreError(
                f"cannot open {self._path}: it holds tables but no taskengine schema version"
            )
        if version < 0 or (version > 0 and ("table", "tasks") not in objects):
            raise errors.StoreError(
                f"cannot open {self._path}: schema version {version} without a tasks table"
            )
        return int(version)

    def _ensure_open(self) -> None:
        if self._state == _OPEN and self._pid == os.getpid():
            return
        if self._state == _NEW:
            self.open()
            return
        if self._state == _OPEN:
            raise errors.StoreError(
                f"cannot use {self._path}: the store was opened in another process (fork)"
            )
        raise errors.StoreError(f"cannot use {self._path}: the store is closed")

    # -- connections and transactions ----------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (made on first use after each open)."""
        self._ensure_open()
        local = self._local
        if getattr(local, "generation", None) == self._generation:
            conn: sqlite3.Connection = local.conn
            return conn
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise errors.StoreError(f"cannot read {self._path}: {exc}") from exc
        with self._state_lock:
            if self._state != _OPEN:
                conn.close()
                raise errors.StoreError(f"cannot use {self._path}: the store is closed")
            # Threads come and go: close the connections of threads that have ended.  One
            # is_alive() call per thread, so a thread ending meanwhile is not dropped unclosed.
            kept = [(threading.current_thread(), conn)]
            for thread, old in self._readers:
                if thread.is_alive():
                    kept.append((thread, old))
                else:
                    old.close()
            self._readers = kept
            local.conn, local.generation = conn, self._generation
        return conn

    def _fetch(self, sql: str, params: Sequence[object] | Mapping[str, object]) -> list[schema.Row]:
        """Run one read statement (atomic on its own) and return its rows."""
        try:
            return self._reader().execute(sql, params).fetchall()
        except _DRIVER_ERRORS as exc:
            raise errors.StoreError(f"cannot read {self._path}: {exc}") from exc

    def _fetch_snapshot(self, sql: str, param_sets: Sequence[Sequence[object]]) -> list[schema.Row]:
        """Run one read statement per parameter set, all in one read transaction."""
        conn = self._reader()
        rows: list[schema.Row] = []
        try:
            conn.execute("BEGIN")
            try:
                for params in param_sets:
                    rows += conn.execute(sql, params).fetchall()
            finally:
                conn.execute("COMMIT")  # a read transaction: ends the snapshot
        except _DRIVER_ERRORS as exc:
            raise errors.StoreError(f"cannot read {self._path}: {exc}") from exc
        return rows

    def _fetch_tasks(
        self, sql: str, params: Sequence[object] | Mapping[str, object]
    ) -> list[models.BackgroundTask]:
        """Run one read statement of task rows and return their tasks, large blobs read in.

        A page with a marked row (``schema.BLOBS_DDL``) is read again in a read transaction,
        with its blobs, so that rows and blobs come from one snapshot; a page without one (the
        usual page) costs one statement, as before.
        """
        conn = self._reader()
        try:
            rows = conn.execute(sql, params).fetchall()
            if any(blobs.has_marker(row) for row in rows):
                conn.execute("BEGIN")
                try:
                    rows = [blobs.filled(conn, row) for row in conn.execute(sql, params).fetchall()]
                finally:
                    conn.execute("COMMIT")  # a read transaction: ends the snapshot
        except _DRIVER_ERRORS as exc:
            raise errors.StoreError(f"cannot read {self._path}: {exc}") from exc
        return [self._task(row) for row in rows]

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` on the writer; ``COMMIT``, or ``ROLLBACK`` on any error.

        ``durable=False`` marks a commit that may be lost at power loss (see Durability).
        """
        self._ensure_open()
        with self._write_lock, self._held_transaction(durable=durable) as conn:
            yield conn

    @contextlib.contextmanager
    def _held_transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """:meth:`_transaction` for a caller that already holds ``_write_lock``.

        Callers of ``insert_many`` that queued while the transaction ran ride along in a
        durable one: their tasks go in just before ``COMMIT``, each under its own savepoint,
        and one fsync serves them all (the reactor's outcome commits and creates on other
        threads share it).  If the commit fails they go back to the queue, to commit alone.
        """
        conn = self._writer
        if conn is None or self._state != _OPEN:
            raise errors.StoreError(f"cannot use {self._path}: the store is closed")
        riders: list[_Inserts] = []
        try:
            self._set_level(conn, "full" if durable else "normal")
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            if durable and self._pending:
                with self._pending_lock:
                    riders, self._pending = self._pending, []
                for request in riders:
                    self._insert_for(conn, request)
            conn.execute("COMMIT")
        except BaseException as exc:
            if riders:
                for request in riders:
                    request.ids, request.error = [], None
                with self._pending_lock:
                    self._pending[:0] = riders
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("ROLLBACK failed on %s", self._path)
            if isinstance(exc, _DRIVER_ERRORS):
                raise errors.StoreError(f"cannot write to {self._path}: {exc}") from exc
            raise
        for request in riders:
            request.done = True

    def _set_level(self, conn: sqlite3.Connection, wanted: str) -> None:
        """Put the writer at ``synchronous = wanted`` (never above the store's own level).

        The level is switched only when it changes, so a run of claims, or of durable writes,
        pays for no pragma.  Until a switch has succeeded the level counts as unknown, so a
        failed switch back to FULL is tried again before the next durable commit rather than
        leaving that commit at NORMAL.
        """
        if self._synchronous == "normal":
            return
        if self._level != wanted:
            self._level = None
            conn.execute(_SYNCHRONOUS[wanted])
            self._level = wanted

    def _task(self, row: schema.Row) -> models.BackgroundTask:
        try:
            return schema.from_row(row)
        except (ValueError, TypeError) as exc:
            raise errors.StoreError(f"cannot read task {row[0]} in {self._path}: {exc}") from exc

    # -- protocol ------------------------------------------------------------------------

    def insert_many(self, tasks: Sequence[models.BackgroundTask]) -> list[str]:
        """Store new tasks in one transaction; an existing idempotency key returns its task's id.

        Group commit: callers on several threads at once share one durable commit.  A caller
        queues its tasks, then takes the write lock; whoever holds it next commits every queued
        caller's tasks in one transaction, each caller's under a savepoint of its own, so that
        one caller's error (an id already stored) rolls back that caller's tasks alone.  A
        caller whose tasks were committed by another finds its answer when it gets the lock.

        Raises:
            StoreError: a task's id is already stored (nothing of this call is stored), or the
                write failed.
        """
        if not tasks:
            return []
        request = _Inserts(tasks, [blobs.marked(schema.to_row(task)) for task in tasks])
        self._ensure_open()
        with self._pending_lock:
            self._pending.append(request)
        with self._write_lock:
            if not request.done:
                self._commit_inserts(request)
        if request.error is not None:
            raise request.error
        return request.ids

    def _commit_inserts(self, own: _Inserts) -> None:
        """Commit every queued caller's tasks in one transaction (``_write_lock`` is held).

        Each caller's answer (ids or error) is left on its request.  Requests leave the queue
        only under the write lock and are answered before it is released, so a caller that
        finds its request unanswered when it holds the lock finds it still queued.
        """
        with self._pending_lock:
            group, self._pending = self._pending, []
        try:
            with self._held_transaction() as conn:
                if len(group) == 1:  # the usual, single caller: no savepoint to pay for
                    own.ids = self._insert_tasks(conn, own.tasks, own.rows)
                else:
                    for request in group:
                        self._insert_for(conn, request)
        except Exception as exc:
            # Nothing of the transaction is stored: every caller in it gets the error, each
            # its own instance (they are raised on different threads).
            for request in group:
                request.ids = []
                if request is own:
                    request.error = exc
                else:
                    request.error = errors.StoreError(str(exc))
                    request.error.__cause__ = exc
        except BaseException:
            # KeyboardInterrupt and the like belong to this caller alone: the others go back
            # to the queue, for the next holder of the write lock.
            others = [request for request in group if request is not own]
            for request in others:
                request.ids, request.error = [], None
            with self._pending_lock:
                self._pending[:0] = others
            raise
        for request in group:
            request.done = True

    def _insert_for(self, conn: sqlite3.Connection, request: _Inserts) -> None:
        """One caller's share of a group commit, under its own savepoint."""
        conn.execute("SAVEPOINT caller")
        try:
            request.ids = self._insert_tasks(conn, request.tasks, request.rows)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite ended the whole transaction (I/O error, disk full): all fail
            conn.execute("ROLLBACK TO caller")
            request.ids = []
            if isinstance(exc, _DRIVER_ERRORS):
                request.error = errors.StoreError(f"cannot write to {self._path}: {exc}")
                request.error.__cause__ = exc
            else:
                request.error = exc
        conn.execute("RELEASE caller")

    def _insert_tasks(
        self,
        conn: sqlite3.Connection,
        tasks: Sequence[models.BackgroundTask],
        rows: Sequence[tuple[object, ...]],
    ) -> list[str]:
        """Insert one caller's tasks in the open transaction and return their ids."""
        if all(task.idempotency_key is None for task in tasks):
            if len(rows) == 1:
                # A statement that fails undoes only itself: one row needs no savepoint.
                inserted = False
                with contextlib.suppress(sqlite3.IntegrityError):
                    conn.execute(schema.INSERT, rows[0])
                    inserted = True
                if inserted:
                    blobs.write_task_blobs(conn, tasks[0])
                    return [tasks[0].id]
            elif writing.bulk(conn, len(rows), lambda: writing.insert_rows(conn, rows)):
                for task in tasks:
                    blobs.write_task_blobs(conn, task)
                return [task.id for task in tasks]
        ids: list[str] = []
        for task, row in zip(tasks, rows, strict=True):
            key = task.idempotency_key
            found = None if key is None else conn.execute(schema.ID_BY_KEY, (key,)).fetchone()
            if found is None or conn.execute(schema.ID_EXISTS, (task.id,)).fetchone():
                try:
                    conn.execute(schema.INSERT, row)
                except sqlite3.IntegrityError as exc:
                    if conn.execute(schema.ID_EXISTS, (task.id,)).fetchone() is None:
                        raise
                    raise errors.StoreError(
                        f"cannot insert into {self._path}: task id {task.id} exists"
                    ) from exc
                blobs.write_task_blobs(conn, task)
                ids.append(task.id)
            else:
                ids.append(found[0])
        return ids

    def get(self, task_id: str) -> models.BackgroundTask | None:
        """Return the stored record, or None."""
        tasks = self._fetch_tasks(schema.SELECT_BY_ID, (task_id,))
        return tasks[0] if tasks else None

    def status_of(self, task_id: str) -> tuple[models.TaskStatus, datetime | None] | None:
        """The task's status and ``date_retain_until`` (``base.StatusReader``), or None.

        It reads neither blob: ``wait`` asks it first, and a pending task's large payload
        would otherwise be copied out of the file for nothing.
        """
        rows = self._fetch(schema.SELECT_STATUS, (task_id,))
        if not rows:
            return None
        status, retain_until = rows[0]
        try:
            return models.TaskStatus(status), schema.to_date(retain_until)
        except ValueError as exc:
            raise errors.StoreError(f"cannot read task {task_id} in {self._path}: {exc}") from exc

    def change_token(self) -> object:
        """``PRAGMA data_version`` of the writer connection (``base.ChangeDetector``).

        SQLite moves a connection's count whenever *another* connection commits to the file.
        Every write of this store goes through the writer connection, so the count moves for
        commits of other processes (or of another ``SqliteStore`` on the file) and never for
        this store's own, which the engine announces itself: a busy engine is not made to read
        its watched tasks again after each of its own commits.  It reads no database page.

        Raises:
            StoreError: the store is closed or the read failed.
        """
        self._ensure_open()
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise errors.StoreError(f"cannot use {self._path}: the store is closed")
            try:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
            except _DRIVER_ERRORS as exc:
                raise errors.StoreError(f"cannot read {self._path}: {exc}") from exc
            # A reopened store has a new writer connection with a count of its own.
            return (self._generation, version)

    def apply(self, writes: Sequence[base.Write]) -> list[bool]:
        """Apply fenced writes in one transaction; for each, whether it applied."""
        if not writes:
            return []
        statements = [writing.write_statement(write) for write in writes]
        with self._transaction() as conn:
            return writing.apply_statements(conn, statements)

    def claim_due(
        self,
        task_type: str,
        now: datetime,
        limit: int,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> list[models.BackgroundTask]:
        """Take up to ``limit`` due pending tasks of ``task_type``, oldest due first.

        An exception raised by ``claim`` rolls the whole claim back and propagates unchanged.
        """
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        return self.apply_and_claim([], [(task_type, limit)], now, claim)[1][0]

    def apply_and_claim(
        self,
        writes: Sequence[base.Write],
        claims: Sequence[tuple[str, int]],
        now: datetime,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> tuple[list[bool], list[list[models.BackgroundTask]]]:
        """Fenced writes, then claims, in one ``BEGIN IMMEDIATE`` transaction (one commit).

        A commit of claims alone is not made durable on its own (see Durability).
        """
        statements = [writing.write_statement(write) for write in writes]
        wanted = [(task_type, limit) for task_type, limit in claims if limit > 0]
        if not statements and not wanted:
            return [], [[] for _ in claims]
        now_ms = clock.to_millis(now)
        with self._transaction(durable=bool(statements)) as conn:
            applied = writing.apply_statements(conn, statements)
            claimed: list[list[models.BackgroundTask]] = []
            for task_type, limit in claims:
                if limit <= 0:
                    claimed.append([])
                elif isinstance(claim, transitions.Claim):
                    claimed.append(self._claim_in_sql(conn, task_type, now_ms, limit, claim))
                else:
                    claimed.append(self._claim_each(conn, task_type, now_ms, limit, claim))
        return applied, claimed

    def _claim_in_sql(
        self,
        conn: sqlite3.Connection,
        task_type: str,
        now_ms: int,
        limit: int,
        claim: transitions.Claim,
    ) -> list[models.BackgroundTask]:
        """The engine's claim, as one ``UPDATE ... RETURNING`` of the whole batch.

        It saves building, diffing and binding every claimed row in Python: about an eighth
        of SqliteStore's time per no-op task (benchmarks/overhead.py).  RETURNING gives rows
        in no promised order, so the due order comes from a first read of the rowids.
        """
        selection = (task_type, now_ms, limit)
        order = {row[0]: i for i, row in enumerate(conn.execute(schema.DUE_ROWIDS, selection))}
        if not order:
            return []
        params = (claim.node, clock.to_millis(claim.now), *selection)
        rows = conn.execute(schema.CLAIM_DUE, params).fetchall()
        if len(rows) != len(order):  # one transaction holds both: this cannot happen
            raise errors.StoreError(f"the claim in {self._path} changed while it ran")
        rows.sort(key=lambda row: order[row[-1]])
        return [self._task(blobs.filled(conn, row, writer=True)) for row in rows]

    def _claim_each(
        self,
        conn: sqlite3.Connection,
        task_type: str,
        now_ms: int,
        limit: int,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> list[models.BackgroundTask]:
        """Any other ``claim`` callable: read the due rows, claim each, write what changed."""
        selected = conn.execute(schema.SELECT_DUE, (task_type, now_ms, limit)).fetchall()
        rows = [blobs.filled(conn, row, writer=True) for row in selected]
        taken = [claim(self._task(row)) for row in rows]
        # Claims change the same columns, so one statement serves them all.
        batches: dict[str, list[tuple[object, ...]]] = {}
        blob_writes: list[tuple[str, blobs.BlobWrites]] = []
        for row, task in zip(rows, taken, strict=True):
            new_row = schema.to_row(task)
            out_of_row = blobs.blob_writes(row, new_row)
            if out_of_row:
                blob_writes.append((task.id, out_of_row))
            update = schema.changed_update(
                blobs.marked(row), blobs.marked(new_row), fenced=False, by_rowid=True
            )
            if update is not None:
                batches.setdefault(update[0], []).append((*update[1], row[-1]))
        for sql, params in batches.items():
            conn.executemany(sql, params)
        for task_id, out_of_row in blob_writes:
            blobs.apply_blob_writes(conn, task_id, out_of_row)
        return taken

    def next_due(self, task_types: Collection[str]) -> datetime | None:
        """The earliest ``date_next_process`` of a pending task of these types."""
        rows = self._fetch_snapshot(schema.NEXT_DUE, [(task_type,) for task_type in task_types])
        return schema.to_date(min((row[0] for row in rows), default=None))

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
        return self._fetch_tasks(schema.query_sql(spec, keyset=after is not None), params)

    def purge_expired(self, now: datetime, limit: int) -> list[str]:
        """Delete up to ``limit`` tasks whose retention ended, earliest first; return their ids."""
        if limit <= 0:
            return []
        with self._transaction() as conn:
            large = conn.execute(schema.ANY_BLOB).fetchone() is not None
            with blobs.small_cache(conn) if large else contextlib.nullcontext():
                rows = conn.execute(schema.PURGE, (clock.to_millis(now), limit)).fetchall()
        return [task_id for task_id, _ in sorted(rows, key=lambda row: (row[1], row[0]))]

    def next_expiry(self) -> datetime | None:
        """The earliest ``date_retain_until`` among stored tasks."""
        rows = self._fetch(schema.NEXT_EXPIRY, ())
        return schema.to_date(rows[0][0]) if rows else None

    def processing(self) -> list[models.BackgroundTask]:
        """All tasks in status processing (for crash recovery at start)."""
        return self._fetch_tasks(schema.SELECT_PROCESSING, ())

    def count_tasks(self, now: datetime) -> list[base.TaskCount]:
        """Visible tasks summarised per ``(type, status)`` in one statement (read-only)."""
        rows = self._fetch(schema.COUNT_TASKS, {"now": clock.to_millis(now)})
        counts = []
        for task_type, status, count, attempts, created, due in rows:
            oldest = schema.to_date(created)
            assert oldest is not None  # every group has at least one row
            counts.append(
                base.TaskCount(
                    task_type=task_type,
                    status=models.TaskStatus(status),
                    count=count,
                    attempts=attempts,
                    oldest_created=oldest,
                    earliest_next_process=schema.to_date(due),
                )
            )
        return counts


class _Inserts:
    """One caller of ``insert_many`` waiting for a group commit, and its answer."""

    __slots__ = ("done", "error", "ids", "rows", "tasks")

    def __init__(
        self, tasks: Sequence[models.BackgroundTask], rows: list[tuple[object, ...]]
    ) -> None:
        self.tasks = tasks
        self.rows = rows
        self.ids: list[str] = []
        self.error: BaseException | None = None
        self.done = False  # answered (ids or error); read and written under _write_lock
