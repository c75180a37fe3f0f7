"""MemoryStore: the task table in a dict, for tests and for work that may be lost on a crash.

It keeps the same encoded blobs as the SQL stores, so copy semantics and decode errors are the
same everywhere.  Due tasks and expiries are found through heaps with lazy deletion: an entry is
checked against the current record when it surfaces, and dropped if stale.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

from taskengine.core import clock, cursor, errors, models
from taskengine.stores import base

__all__ = ["MemoryStore"]

Status = models.TaskStatus


class MemoryStore:
    """An in-process, non-durable task store (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, models.BackgroundTask] = {}
        self._keys: dict[str, str] = {}
        self._due: dict[str, list[tuple[int, str]]] = {}
        self._expiry: list[tuple[int, str]] = []
        self._capabilities = base.StoreCapabilities(durable=False, shared=False)
        self._dispatcher: str | None = None
        #: Counts writes, for ``change_token`` (two engines may share one store object).
        self._version = 0

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Neither durable nor shared."""
        return self._capabilities

    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Release the dispatch lock; the data stays readable until the store is dropped."""
        with self._lock:
            self._dispatcher = None

    def acquire_dispatch_lock(self, node_identity: str) -> None:
        """Refuse a second engine dispatching from this same store object."""
        with self._lock:
            if self._dispatcher is not None and self._dispatcher != node_identity:
                raise errors.StoreError(
                    f"this MemoryStore is already used by the engine {self._dispatcher}"
                )
            self._dispatcher = node_identity

    def change_token(self) -> object:
        """The number of writes so far (``base.ChangeDetector``)."""
        with self._lock:
            return self._version

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)

    # -- indexes -------------------------------------------------------------------------

    def _index(self, task: models.BackgroundTask) -> None:
        if task.status is Status.PENDING and task.date_next_process is not None:
            heap = self._due.setdefault(task.type, [])
            heapq.heappush(heap, (clock.to_millis(task.date_next_process), task.id))
        if task.date_retain_until is not None:
            heapq.heappush(self._expiry, (clock.to_millis(task.date_retain_until), task.id))

    def _put(self, task: models.BackgroundTask) -> None:
        self._version += 1
        self._tasks[task.id] = task
        self._index(task)

    def _remove(self, task_id: str) -> None:
        self._version += 1
        task = self._tasks.pop(task_id)
        if task.idempotency_key is not None and self._keys.get(task.idempotency_key) == task_id:
            del self._keys[task.idempotency_key]

    def _is_due_entry(self, due_ms: int, task_id: str) -> models.BackgroundTask | None:
        task = self._tasks.get(task_id)
        if (
            task is None
            or task.status is not Status.PENDING
            or task.date_next_process is None
            or clock.to_millis(task.date_next_process) != due_ms
        ):
            return None
        return task

    # -- protocol ------------------------------------------------------------------------

    def insert_many(self, tasks: Sequence[models.BackgroundTask]) -> list[str]:
        """Store new tasks; an existing idempotency key returns the stored task's id."""
        with self._lock:
            seen: set[str] = set()
            for task in tasks:
                if task.id in self._tasks or task.id in seen:
                    raise errors.StoreError(f"a task with id {task.id} already exists")
                seen.add(task.id)
            ids = []
            for task in tasks:
                key = task.idempotency_key
                if key is not None and key in self._keys:
                    ids.append(self._keys[key])
                    continue
                if key is not None:
                    self._keys[key] = task.id
                self._put(task)
                ids.append(task.id)
            return ids

    def get(self, task_id: str) -> models.BackgroundTask | None:
        """Return the stored record, or None."""
        with self._lock:
            return self._tasks.get(task_id)

    def apply(self, writes: Sequence[base.Write]) -> list[bool]:
        """Apply fenced writes atomically."""
        with self._lock:
            return [self._apply_one(write) for write in writes]

    def _apply_one(self, write: base.Write) -> bool:
        if isinstance(write, base.Update):
            current = self._tasks.get(write.task.id)
            if (
                current is None
                or current.status is not write.expected_status
                or current.attempts != write.expected_attempts
            ):
                return False
            self._put(write.task)
            return True
        current = self._tasks.get(write.task_id)
        if current is None:
            return False
        if write.expected_status is not None and current.status is not write.expected_status:
            return False
        if write.expected_attempts is not None and current.attempts != write.expected_attempts:
            return False
        self._remove(write.task_id)
        return True

    def claim_due(
        self,
        task_type: str,
        now: datetime,
        limit: int,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> list[models.BackgroundTask]:
        """Take up to ``limit`` due pending tasks of ``task_type``."""
        return self.apply_and_claim([], [(task_type, limit)], now, claim)[1][0]

    def apply_and_claim(
        self,
        writes: Sequence[base.Write],
        claims: Sequence[tuple[str, int]],
        now: datetime,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> tuple[list[bool], list[list[models.BackgroundTask]]]:
        """Apply fenced writes, then claim due tasks, atomically."""
        now_ms = clock.to_millis(now)
        with self._lock:
            applied = [self._apply_one(write) for write in writes]
            claimed = [self._claim(task_type, now_ms, limit, claim) for task_type, limit in claims]
        return applied, claimed

    def _claim(
        self,
        task_type: str,
        now_ms: int,
        limit: int,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> list[models.BackgroundTask]:
        heap = self._due.get(task_type)
        taken: list[tuple[int, str]] = []
        claimed: list[models.BackgroundTask] = []
        seen: set[str] = set()
        try:
            while heap and len(claimed) < limit and heap[0][0] <= now_ms:
                entry = heapq.heappop(heap)
                task = self._is_due_entry(*entry)
                # A task re-indexed with the same due time has two heap entries; claims are only
                # stored after the loop, so skip the second one here.
                if task is None or task.id in seen:
                    continue
                seen.add(task.id)
                taken.append(entry)
                claimed.append(claim(task))
        except BaseException:
            for entry in taken:  # nothing is claimed when ``claim`` fails
                heapq.heappush(heap, entry)  # type: ignore[arg-type]
            raise
        for task in claimed:
            self._put(task)
        return claimed

    def next_due(self, task_types: Collection[str]) -> datetime | None:
        """The earliest due time of a pending task of these types."""
        best: int | None = None
        with self._lock:
            for task_type in task_types:
                heap = self._due.get(task_type)
                while heap and self._is_due_entry(*heap[0]) is None:
                    heapq.heappop(heap)
                if heap and (best is None or heap[0][0] < best):
                    best = heap[0][0]
        return None if best is None else clock.from_millis(best)

    def query(
        self,
        spec: cursor.QuerySpec,
        after: cursor.CursorPosition | None,
        limit: int,
        now: datetime,
    ) -> list[models.BackgroundTask]:
        """A keyset page over a sorted snapshot of the matching tasks."""
        with self._lock:
            rows = [
                task
                for task in self._tasks.values()
                if (spec.task_type is None or task.type == spec.task_type)
                and (spec.status is None or task.status is spec.status)
                and (task.date_retain_until is None or task.date_retain_until > now)
            ]
        if limit < 1:
            return []
        descending = spec.direction is models.SortDirection.DESCENDING
        keyed = [(cursor.sort_key(task, spec.sort_field), task) for task in rows]
        if after is not None:
            mark = (after.value, after.task_id)
            keyed = [(k, t) for k, t in keyed if (k < mark if descending else k > mark)]
        keyed.sort(key=lambda item: item[0], reverse=descending)
        return [task for _, task in keyed[:limit]]

    def purge_expired(self, now: datetime, limit: int) -> list[str]:
        """Delete finished tasks whose retention ended."""
        now_ms = clock.to_millis(now)
        purged: list[str] = []
        with self._lock:
            while self._expiry and len(purged) < limit and self._expiry[0][0] <= now_ms:
                until_ms, task_id = heapq.heappop(self._expiry)
                task = self._tasks.get(task_id)
                if (
                    task is None
                    or task.date_retain_until is None
                    or clock.to_millis(task.date_retain_until) != until_ms
                ):
                    continue
                self._remove(task_id)
                purged.append(task_id)
        return purged

    def next_expiry(self) -> datetime | None:
        """The earliest retention end among stored tasks."""
        with self._lock:
            while self._expiry:
                until_ms, task_id = self._expiry[0]
                task = self._tasks.get(task_id)
                if (
                    task is not None
                    and task.date_retain_until is not None
                    and clock.to_millis(task.date_retain_until) == until_ms
                ):
                    return task.date_retain_until
                heapq.heappop(self._expiry)
        return None

    def processing(self) -> list[models.BackgroundTask]:
        """All tasks in status processing."""
        with self._lock:
            return [t for t in self._tasks.values() if t.status is Status.PROCESSING]

    def count_tasks(self, now: datetime) -> list[base.TaskCount]:
        """Visible tasks summarised per ``(type, status)`` (see ``TaskStore.count_tasks``)."""
        groups: dict[tuple[str, Status], list[models.BackgroundTask]] = {}
        with self._lock:
            for task in self._tasks.values():
                if task.date_retain_until is None or task.date_retain_until > now:
                    groups.setdefault((task.type, task.status), []).append(task)
        return [
            base.TaskCount(
                task_type=task_type,
                status=status,
                count=len(tasks),
                attempts=sum(task.attempts for task in tasks),
                oldest_created=min(task.date_created for task in tasks),
                earliest_next_process=min(
                    (t.date_next_process for t in tasks if t.date_next_process is not None),
                    default=None,
                ),
            )
            for (task_type, status), tasks in groups.items()
        ]
