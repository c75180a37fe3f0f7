"""The store protocol: what the engine needs from a persistence backend.

Rules for every implementation (checked by ``tests/contract``):

* Methods take and return ``BackgroundTask`` records, never driver rows.  Payloads and results
  are kept as the blobs the task carries, byte for byte.
* Every method is atomic, and on a durable store durable when it returns.  Driver errors are
  raised as ``StoreError`` with the driver error chained; nothing else escapes.
* Datetimes keep millisecond precision in UTC, so order and cursors match across stores.
* Writes that finish or change an attempt are *fenced*: ``Update``/``Delete`` name the status and
  attempt count they expect, and apply only if the stored record still has them.  This one rule
  keeps a late writer (a killed worker's result, a cancelled task) from changing anything.
* SQL stores bind every value as a parameter; identifiers come only from constants.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from taskengine.core import cursor, models

__all__ = [
    "ChangeDetector",
    "Delete",
    "SharedTaskStore",
    "StatusReader",
    "StoreCapabilities",
    "TaskCount",
    "TaskStore",
    "Update",
    "Write",
]


@attrs.frozen(kw_only=True)
class StoreCapabilities:
    """What a store promises.

    Attributes:
        durable: acknowledged writes survive a crash of the process.
        shared: several engine nodes may use one task table at once.
    """

    durable: bool
    shared: bool


@attrs.frozen(kw_only=True)
class Update:
    """Replace a task's record if it still has ``expected_status`` and ``expected_attempts``.

    ``previous`` (optional) is the record the writer read; a store may use it to write only the
    fields that changed.  It never weakens the fence.
    """

    task: models.BackgroundTask
    expected_status: models.TaskStatus
    expected_attempts: int
    previous: models.BackgroundTask | None = None


@attrs.frozen(kw_only=True)
class Delete:
    """Delete a task; fenced like ``Update`` unless both expectations are None."""

    task_id: str
    expected_status: models.TaskStatus | None = None
    expected_attempts: int | None = None


Write = Update | Delete


@attrs.frozen(kw_only=True)
class TaskCount:
    """The visible tasks of one ``(task_type, status)`` pair, summarised (``count_tasks``).

    Attributes:
        task_type: the tasks' type.
        status: the tasks' status.
        count: how many tasks (always at least 1: empty groups are not reported).
        attempts: the sum of their ``attempts``.
        oldest_created: the smallest ``date_created`` of the group.
        earliest_next_process: the smallest ``date_next_process`` of the group (None when no
            task of the group has one, which is the case for every status but pending).
    """

    task_type: str
    status: models.TaskStatus
    count: int
    attempts: int
    oldest_created: datetime
    earliest_next_process: datetime | None = None


@runtime_checkable
class TaskStore(Protocol):
    """A persistence backend for the task table."""

    @property
    def capabilities(self) -> StoreCapabilities:
        """What this store promises (durability, sharing between nodes)."""
        ...

    def open(self) -> None:
        """Connect and create or check the schema; calling it again does nothing."""
        ...

    def close(self) -> None:
        """Release connections; calling it again does nothing."""
        ...

    def acquire_dispatch_lock(self, node_identity: str) -> None:
        """Become the one engine that dispatches from this store (single-node stores).

        A second dispatching engine on the same table would re-queue the first one's running
        attempts as crashed and run them twice; it must be refused instead.  Readers (``get``,
        ``query``) and writers such as ``cancel`` need no lock.  Shared stores, which coordinate
        nodes through claims and leases, accept every node.  ``close`` releases the lock.

        Raises:
            StoreError: another engine holds the lock; the message names it where known.
        """
        ...

    def insert_many(self, tasks: Sequence[models.BackgroundTask]) -> list[str]:
        """Store new tasks in one transaction and return their ids.

        A task whose ``idempotency_key`` belongs to a stored task is not inserted: the stored
        task's id is returned in its place.  An id that is already stored, or repeated within
        the batch, is a ``StoreError`` and nothing is stored.
        """
        ...

    def get(self, task_id: str) -> models.BackgroundTask | None:
        """Return the stored record, or None."""
        ...

    def apply(self, writes: Sequence[Write]) -> list[bool]:
        """Apply fenced writes in one transaction; for each, whether it applied."""
        ...

    def claim_due(
        self,
        task_type: str,
        now: datetime,
        limit: int,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> list[models.BackgroundTask]:
        """Atomically take up to ``limit`` due pending tasks of a type, oldest due first.

        Each is passed through ``claim`` and the results are stored and returned.  No task is
        returned by two concurrent calls.  A ``limit`` below 1 claims nothing; an exception
        from ``claim`` claims nothing and propagates.  The engine passes a
        ``transitions.Claim`` (the time and node of ``transitions.claim``, callable); a store
        may apply one in its own query language instead of calling it, provided every stored
        and returned record equals what calling it would give.
        """
        ...

    def apply_and_claim(
        self,
        writes: Sequence[Write],
        claims: Sequence[tuple[str, int]],
        now: datetime,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> tuple[list[bool], list[list[models.BackgroundTask]]]:
        """``apply(writes)`` then ``claim_due`` for each ``(task_type, limit)``, in ONE transaction.

        This is the engine's group commit: the outcomes of every attempt that ended during one
        turn of the reactor and the claims of the next attempts cost one durable commit.
        """
        ...

    def next_due(self, task_types: Collection[str]) -> datetime | None:
        """The earliest ``date_next_process`` of a pending task of these types."""
        ...

    def query(
        self,
        spec: cursor.QuerySpec,
        after: cursor.CursorPosition | None,
        limit: int,
        now: datetime,
    ) -> list[models.BackgroundTask]:
        """A keyset page: tasks matching ``spec`` and visible at ``now``, after ``after``."""
        ...

    def purge_expired(self, now: datetime, limit: int) -> list[str]:
        """Delete up to ``limit`` finished tasks whose retention ended; return their ids."""
        ...

    def next_expiry(self) -> datetime | None:
        """The earliest ``date_retain_until`` among stored tasks."""
        ...

    def processing(self) -> list[models.BackgroundTask]:
        """All tasks in status processing (for crash recovery at start)."""
        ...

    def count_tasks(self, now: datetime) -> list[TaskCount]:
        """Summarise the task table per ``(type, status)`` for ``engine.stats()``.

        Contract (checked by ``tests/contract/test_count_tasks.py``):

        * One ``TaskCount`` per ``(type, status)`` pair that has at least one task visible at
          ``now``, in no particular order; a task is visible exactly when ``query`` would return
          it: ``date_retain_until`` is None or later than ``now`` (expired tasks that the sweep
          has not deleted yet are not counted).
        * ``count`` is the number of such tasks, ``attempts`` the sum of their ``attempts``,
          ``oldest_created`` the minimum ``date_created`` and ``earliest_next_process`` the
          minimum non-null ``date_next_process`` (None when every one is null), with the same
          millisecond UTC precision as every other datetime the store returns.
        * One consistent snapshot (a single statement or read transaction); read-only; it never
          decodes payloads or results.  An SQL store answers it with one ``GROUP BY type,
          status`` statement filtered by ``date_retain_until IS NULL OR date_retain_until >
          now`` and binds ``now`` as a parameter.
        """
        ...


@runtime_checkable
class StatusReader(Protocol):
    """An optional store method: whether a task is finished, without reading its blobs.

    ``wait`` and the engine's watcher look at a task to learn whether it has finished, and most
    often it has not; a store whose ``get`` copies the task's payload (SqliteStore reads it
    out of the file) lets them skip that copy.  A store without it has ``get`` called instead.
    """

    def status_of(self, task_id: str) -> tuple[models.TaskStatus, datetime | None] | None:
        """The task's status and ``date_retain_until``, or None when no such task is stored.

        Raises:
            StoreError: the read failed.
        """
        ...


@runtime_checkable
class ChangeDetector(Protocol):
    """An optional store method: a cheap sign that the task table may have changed.

    The engine's watcher (``publishing.Watcher``) calls it about every 0.1 s while a ``wait``
    watches a task, and reads the watched tasks again only when the token differs from the one
    before.  A store without it has the watched tasks read at every check instead.
    """

    def change_token(self) -> object:
        """A value that differs from the previous call's once another writer committed since.

        "Another writer" is anything but this store object: another process, or another store
        object on the same data.  Writes made through this object may move the token or not
        (the engine announces its own changes itself).  It may also move when nothing changed
        (a false alarm costs one read per watched task), but it must never stay equal across
        another writer's commit.

        Raises:
            StoreError: the store failed.
        """
        ...


@runtime_checkable
class FinishNotifier(Protocol):
    """An optional store method: being told at once when tasks finish or go, in any process.

    The engine's watcher (``publishing.Watcher``) subscribes, so that a ``wait`` for a task
    that another process runs returns as soon as that process stored the outcome, instead of
    at the watcher's next poll.  Notices are hints: the watcher reads each task before it
    announces anything, and keeps polling, so a notice that is lost only costs time.
    """

    def on_finished(self, callback: Callable[[Collection[str]], None]) -> None:
        """Call ``callback`` (on any thread, quickly) with ids of tasks finished or deleted.

        Writes of every store object on the same data count, this one's included.
        """
        ...


@runtime_checkable
class SharedTaskStore(TaskStore, Protocol):
    """A store several engine nodes share (``capabilities.shared``): the extra duties.

    The engine uses these methods only when ``capabilities.shared`` is true, so single-node
    stores need not have them.  Lease times are measured by the store (database time), never
    by a node's clock.
    """

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between a node's lease renewals."""
        ...

    def renew_leases(self, node_identity: str) -> list[str]:
        """Extend the lease of every processing task ``node_identity`` holds; return their ids."""
        ...

    def expired_claims(self, limit: int) -> list[models.BackgroundTask]:
        """Up to ``limit`` processing tasks whose lease ended (their node died or stalled)."""
        ...

    def listen(
        self,
        node_identity: str,
        on_wakeup: Callable[[], None],
        on_terminate: Callable[[str], None],
    ) -> None:
        """Start delivering the store's notifications to this node; they end at ``close``.

        ``on_wakeup`` runs when work may be due (and after each reconnection);
        ``on_terminate(task_id)`` when another node cancelled or removed an attempt running on
        ``node_identity``.
        """
        ...

    def request_termination(self, node_identity: str, task_id: str) -> None:
        """Ask ``node_identity`` to kill the worker running ``task_id`` (best effort)."""
        ...
