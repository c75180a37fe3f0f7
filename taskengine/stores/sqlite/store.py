"""SqliteStore: the task table in one SQLite file (stdlib ``sqlite3``), the embedded default.

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

Large blobs.  A payload or result of ``schema.LARGE_BLOB`` bytes or more is stored in the
``task_blobs`` table, its column in the task's row holding an empty marker (see
``schema.BLOBS_DDL``): it is inserted as ``zeroblob(n)`` and filled in chunks through
``sqlite3.Blob``, and read back with one ``Blob.read``, in the same transaction (or read
snapshot) as the row, so that SQLite holds no copy of it on the way.  The writer's page cache
is shrunk while such a blob passes, and ``status_of`` answers ``wait`` without reading it.

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
import errno
import fcntl
import functools
import itertools
import logging
import math
import os
import socket
import sqlite3
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Final, TypeVar

from taskengine.core import clock, cursor, errors, models, transitions
from taskengine.stores import base
from taskengine.stores.sqlite import schema

__all__ = ["SqliteStore", "sqlite_uri"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Page cache of the writer connection, in KiB.
_WRITER_CACHE_KIB: Final = 65536
#: The writer's page cache while it writes, reads or deletes a large blob (``schema.LARGE_BLOB``):
#: the blob's pages would otherwise fill the whole cache above, up to 64 MiB held by the
#: process for as long as it runs.
_BLOB_CACHE_KIB: Final = 1024
#: Bytes written to a large blob per ``Blob.write`` call.
_BLOB_CHUNK: Final = 1 << 20
#: (kind, the value to store out of the row, or None to remove a stale one) per blob column.
_BlobWrites = tuple[tuple[str, bytes | None], ...]
_SYNCHRONOUS: Final = {"full": "PRAGMA synchronous = FULL", "normal": "PRAGMA synchronous = NORMAL"}
#: Errors of the driver (binding included) that become ``StoreError``.
_DRIVER_ERRORS: Final = (sqlite3.Error, OverflowError, UnicodeEncodeError)
_NEW, _OPEN, _CLOSED = "new", "open", "closed"
#: Abstract Unix sockets (Linux) carry the per-inode half of the dispatch lock.
_INODE_LOCKS: Final = sys.platform.startswith("linux")


def sqlite_uri(path: str) -> str:
    """The ``file:`` URI that opens the existing file ``path`` read-write, whatever its name.

    ``path`` must be absolute.  An empty authority (``file://``) comes first, so that a path
    that itself starts with ``//`` is never read as an authority, and every character outside
    the unreserved set is percent-encoded, so ``?``, ``#``, ``%`` and spaces stay in the name.
    """
    return f"file://{urllib.parse.quote(path, safe='/')}?mode=rw"


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
        self._lock_fd: int | None = None
        self._lock_socket: socket.socket | None = None
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
            created = self._create_file()
            try:
                writer = self._connect()
            except BaseException:
                if created is not None:
                    _remove_if_empty(self._path, created)
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
                writer.execute(f"PRAGMA cache_size = {-_WRITER_CACHE_KIB}")
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
                    _remove_if_empty(self._path, created)
                if isinstance(exc, _DRIVER_ERRORS):
                    raise errors.StoreError(f"cannot open {self._path}: {exc}") from exc
                raise
            self._check_side_files()
            self._writer = writer
            self._state = _OPEN
            self._pid = os.getpid()
            self._generation += 1

    def acquire_dispatch_lock(self, node_identity: str) -> None:
        """Hold the file's dispatch lock until ``close``.

        The lock follows the file, not the name it was opened by.  Its first half is an
        exclusive ``flock`` on ``<real path>.lock``, beside the file that the path resolves to
        (symbolic links, ``..`` and doubled slashes resolved when the lock is taken), which
        records the holder's node identity for the error message.  Its second half, on Linux,
        is an abstract Unix socket named after the file's device and inode, which every hard
        link of the file reaches too.  The kernel drops both when the holder dies, so a crashed
        engine never blocks its successor.

        Raises:
            StoreError: another engine (in this or another process) dispatches from the file.
        """
        self._ensure_open()
        with self._state_lock:
            if self._lock_fd is not None:
                return
            real = os.path.realpath(self._path)
            lock_path = real + ".lock"
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise errors.StoreError(f"cannot create {lock_path}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise self._in_use(holder) from exc
            try:
                sock = _claim_inode(real) if _INODE_LOCKS else None
                if _INODE_LOCKS and sock is None:
                    raise self._in_use("through another name of the same file")
            except BaseException:
                os.close(fd)  # drops the flock taken above
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, node_identity.encode(), 0)
            self._lock_fd, self._lock_socket = fd, sock

    def _in_use(self, holder: str) -> errors.StoreError:
        return errors.StoreError(
            f"{self._path} is already used by another running engine ({holder}); "
            "one SQLite file has one dispatching engine"
        )

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
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)  # closing the descriptor drops the flock
                self._lock_fd = None
            if self._lock_socket is not None:
                self._lock_socket.close()  # frees its abstract name at once
                self._lock_socket = None
            for conn in connections:
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()

    def _create_file(self) -> tuple[int, int] | None:
        """Create the file 0600 before SQLite sees it; warn about loose permissions.

        Returns the device and inode of the file when this call created it, so that a failed
        open can remove it again; None when it was there already.
        """
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            _warn_if_writable_by_others(self._path, "database file")
            created = None
        except OSError as exc:
            raise errors.StoreError(f"cannot create {self._path}: {exc.strerror}") from exc
        else:
            try:
                info = os.fstat(fd)
            finally:
                os.close(fd)
            created = (info.st_dev, info.st_ino)
        _warn_if_writable_by_others(os.path.dirname(self._path), "directory of database file")
        return created

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: SQLite never creates the file itself (_create_file did, with mode 0600).
        try:
            return sqlite3.connect(
                sqlite_uri(self._path),
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

    def _check_side_files(self) -> None:
        """Give -wal and -shm no more permission than the main file has."""
        try:
            allowed = stat.S_IMODE(os.stat(self._path).st_mode)
            for suffix in ("-wal", "-shm"):
                side = self._path + suffix
                with contextlib.suppress(FileNotFoundError):
                    mode = stat.S_IMODE(os.stat(side).st_mode)
                    if mode & ~allowed:
                        logger.warning("%s had mode %o; setting %o", side, mode, allowed)
                        os.chmod(side, allowed)
        except OSError as exc:
            raise errors.StoreError(f"cannot check {self._path}: {exc.strerror}") from exc

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
            if any(_has_marker(row) for row in rows):
                conn.execute("BEGIN")
                try:
                    rows = [_filled(conn, row) for row in conn.execute(sql, params).fetchall()]
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
        request = _Inserts(tasks, [_marked(schema.to_row(task)) for task in tasks])
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
                    _write_task_blobs(conn, tasks[0])
                    return [tasks[0].id]
            elif _bulk(conn, len(rows), lambda: _insert_rows(conn, rows)):
                for task in tasks:
                    _write_task_blobs(conn, task)
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
                _write_task_blobs(conn, task)
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
        statements = [_write_statement(write) for write in writes]
        with self._transaction() as conn:
            return _apply_statements(conn, statements)

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
        statements = [_write_statement(write) for write in writes]
        wanted = [(task_type, limit) for task_type, limit in claims if limit > 0]
        if not statements and not wanted:
            return [], [[] for _ in claims]
        now_ms = clock.to_millis(now)
        with self._transaction(durable=bool(statements)) as conn:
            applied = _apply_statements(conn, statements)
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
        return [self._task(_filled(conn, row, writer=True)) for row in rows]

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
        rows = [_filled(conn, row, writer=True) for row in selected]
        taken = [claim(self._task(row)) for row in rows]
        # Claims change the same columns, so one statement serves them all.
        batches: dict[str, list[tuple[object, ...]]] = {}
        blob_writes: list[tuple[str, _BlobWrites]] = []
        for row, task in zip(rows, taken, strict=True):
            new_row = schema.to_row(task)
            blobs = _blob_writes(row, new_row)
            if blobs:
                blob_writes.append((task.id, blobs))
            update = schema.changed_update(
                _marked(row), _marked(new_row), fenced=False, by_rowid=True
            )
            if update is not None:
                batches.setdefault(update[0], []).append((*update[1], row[-1]))
        for sql, params in batches.items():
            conn.executemany(sql, params)
        for task_id, blobs in blob_writes:
            _apply_blob_writes(conn, task_id, blobs)
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
            with _small_cache(conn) if large else contextlib.nullcontext():
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


def _remove_if_empty(path: str, created: tuple[int, int]) -> None:
    """Remove the file that a failed open created, unless someone else has used it since."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if (info.st_dev, info.st_ino) == created and info.st_size == 0:
            os.unlink(path)


def _claim_inode(real_path: str) -> socket.socket | None:
    """Bind the abstract socket of the file's device and inode; None if another holds it.

    An abstract name lives as long as a socket bound to it, in no file system, and is shared
    by every process of the network namespace: whichever name reached the file, two engines on
    one file compute the same socket name.

    Raises:
        StoreError: the file cannot be examined or the socket cannot be made.
    """
    try:
        info = os.stat(real_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except OSError as exc:
        raise errors.StoreError(f"cannot lock {real_path}: {exc}") from exc
    try:
        sock.bind(f"\0taskengine-dispatch/{info.st_dev}/{info.st_ino}")
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise errors.StoreError(f"cannot lock {real_path}: {exc}") from exc
    return sock


def _warn_if_writable_by_others(path: str, what: str) -> None:
    """Log a warning when ``path`` is writable by its group or by others."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # connecting reports the real problem
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        logger.warning(
            "the %s %s is writable by group or others (mode %o): anyone who can write it "
            "can run code as this user through the task payloads",
            what,
            path,
            stat.S_IMODE(mode),
        )


def _bulk(conn: sqlite3.Connection, expected: int, run: Callable[[], object]) -> bool:
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


def _is_large(value: object) -> bool:
    return isinstance(value, bytes) and len(value) >= schema.LARGE_BLOB


def _marked(row: tuple[object, ...]) -> tuple[object, ...]:
    """``row`` with each large blob replaced by the empty marker (``schema.BLOBS_DDL``)."""
    if not (_is_large(row[3]) or _is_large(row[4])):
        return row
    values = list(row)
    for index in schema.BLOB_COLUMNS.values():
        if _is_large(values[index]):
            values[index] = b""
    return tuple(values)


def _blob_writes(old: schema.Row | None, new: tuple[object, ...]) -> _BlobWrites:
    """What a write of row ``new`` over row ``old`` (None: unknown) does in ``task_blobs``.

    A changed large value is stored out of the row; a changed value that is not large removes
    the blob it replaces, which is only there if the old value was large (or is unknown).
    """
    writes: list[tuple[str, bytes | None]] = []
    for kind, index in schema.BLOB_COLUMNS.items():
        value = new[index]
        if old is not None and old[index] == value:
            continue
        if _is_large(value):
            assert isinstance(value, bytes)
            writes.append((kind, value))
        elif old is None or _is_large(old[index]):
            writes.append((kind, None))
    return tuple(writes)


@contextlib.contextmanager
def _small_cache(conn: sqlite3.Connection) -> Iterator[None]:
    """The writer's page cache shrunk to ``_BLOB_CACHE_KIB`` while a large blob passes."""
    conn.execute(f"PRAGMA cache_size = {-_BLOB_CACHE_KIB}")
    try:
        yield
    finally:
        try:
            conn.execute(f"PRAGMA cache_size = {-_WRITER_CACHE_KIB}")
        except sqlite3.Error:
            # The error that ended the block (if any) is the one to report; a small cache
            # only slows the writer down.
            logger.warning("could not restore the writer's page cache size", exc_info=True)


def _apply_blob_writes(conn: sqlite3.Connection, task_id: str, writes: _BlobWrites) -> None:
    """Store or remove a task's out-of-row blobs, in the open transaction.

    A blob is inserted as ``zeroblob(n)`` (SQLite writes zeroed pages, holding no copy) and
    filled in place in chunks: binding the value instead would cost two copies of it.
    """
    # A stale blob's delete reads its pages too (to follow their chain).
    with _small_cache(conn):
        for kind, value in writes:
            if value is None:
                conn.execute(schema.DELETE_BLOB, (task_id, kind))
                continue
            rowid = conn.execute(schema.INSERT_BLOB, (task_id, kind, len(value))).lastrowid
            assert rowid is not None
            view = memoryview(value)
            with conn.blobopen("task_blobs", "data", rowid) as blob:
                for start in range(0, len(view), _BLOB_CHUNK):
                    blob.write(view[start : start + _BLOB_CHUNK])


def _write_task_blobs(conn: sqlite3.Connection, task: models.BackgroundTask) -> None:
    """Store the large blobs of a task just inserted (its row holds their markers)."""
    writes = tuple(
        (kind, value)
        for kind, value in (("payload", task.payload_blob), ("result", task.result_blob))
        if value is not None and len(value) >= schema.LARGE_BLOB
    )
    if writes:
        _apply_blob_writes(conn, task.id, writes)


def _has_marker(row: schema.Row) -> bool:
    return bool(row[3] == b"" or row[4] == b"")


def _filled(conn: sqlite3.Connection, row: schema.Row, *, writer: bool = False) -> schema.Row:
    """``row`` with its large blobs read in, in the caller's transaction.

    A marker (``schema.BLOBS_DDL``) is filled from ``task_blobs``; a payload that
    ``schema.CLAIM_DUE`` left NULL (a large payload stored in the row by an older version; the
    row then ends with its rowid) from the row itself.  ``Blob.read`` copies the pages straight
    into the one ``bytes`` it returns: no SQLite value and no staged copy is made on the way.
    On the writer (``writer``) the page cache is kept small meanwhile (``_small_cache``).
    """
    legacy = row[3] is None
    if not legacy and not _has_marker(row):
        return row
    values = list(row)
    with _small_cache(conn) if writer else contextlib.nullcontext():
        if legacy:
            with conn.blobopen("tasks", "payload", row[-1], readonly=True) as blob:
                values[3] = blob.read()
        for kind, rowid in conn.execute(schema.BLOB_ROWIDS, (row[0],)).fetchall():
            index = schema.BLOB_COLUMNS[kind]
            if values[index] == b"":
                with conn.blobopen("task_blobs", "data", rowid, readonly=True) as blob:
                    values[index] = blob.read()
    return tuple(values)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (one statement's worth each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert ``rows`` with as few statements as ``schema.INSERT_ROWS`` allows."""
    for chunk in _chunks(rows, schema.INSERT_ROWS):
        conn.execute(schema.insert_sql(len(chunk)), list(itertools.chain.from_iterable(chunk)))


def _apply_statements(conn: sqlite3.Connection, statements: Sequence[_Statement]) -> list[bool]:
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
        deleting = sql in _DELETES and _has_blobs(conn, [params[0] for _, params, _ in run])
        with _small_cache(conn) if deleting else contextlib.nullcontext():
            if len(run) > 1 and _bulk(
                conn, len(run), functools.partial(_run_same, conn, sql, [p for _, p, _ in run])
            ):
                done = [True] * len(run)
            else:
                done = [conn.execute(sql, params).rowcount == 1 for _, params, _ in run]
        for (_, _, blobs), held in zip(run, done, strict=True):
            if held and blobs is not None:
                _apply_blob_writes(conn, *blobs)
        applied += done
        start = end
    return applied


#: The SQL of fenced deletes, whose trigger may remove large blobs.
_DELETES: Final = frozenset(schema.DELETE.values())


def _has_blobs(conn: sqlite3.Connection, task_ids: Sequence[object]) -> bool:
    """Whether any of these tasks has a large blob (a store without any answers in one step)."""
    if conn.execute(schema.ANY_BLOB).fetchone() is None:
        return False
    return any(
        conn.execute(schema.blobs_of_sql(len(chunk)), chunk).fetchone() is not None
        for chunk in _chunks(task_ids, schema.DELETE_IDS)
    )


def _run_same(conn: sqlite3.Connection, sql: str, params: list[tuple[object, ...]]) -> None:
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
        for chunk in _chunks(ids, schema.DELETE_IDS):
            conn.execute(schema.delete_fenced_sql(len(chunk)), (*chunk, *fence))


#: One fenced write: its SQL, its parameters, and the task's out-of-row blob writes (if any).
_Statement = tuple[str, tuple[object, ...], tuple[str, _BlobWrites] | None]


def _write_statement(write: base.Write) -> _Statement:
    """The SQL, parameters and out-of-row blob writes of one fenced write."""
    if isinstance(write, base.Update):
        guard = (write.task.id, write.expected_status.value, write.expected_attempts)
        new_row = schema.to_row(write.task)
        old_row = None
        if write.previous is not None and write.previous.id == write.task.id:
            old_row = schema.to_row(write.previous)
        writes = _blob_writes(old_row, new_row)
        blobs = (write.task.id, writes) if writes else None
        if old_row is not None:
            update = schema.changed_update(_marked(old_row), _marked(new_row), fenced=True)
            # Nothing changed: still check the fence, so the answer means what it says.
            sql, values = update or (schema.UPDATE_FENCED_NOTHING, ())
            return sql, (*values, *guard), blobs
        return schema.UPDATE_FENCED, (*_marked(new_row), *guard), blobs
    fence = (write.expected_status is not None, write.expected_attempts is not None)
    params: tuple[object, ...] = (write.task_id,)
    if write.expected_status is not None:
        params += (write.expected_status.value,)
    if write.expected_attempts is not None:
        params += (write.expected_attempts,)
    return schema.DELETE[fence], params, None


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
