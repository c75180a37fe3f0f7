"""What happens after a change is stored.

State-change callbacks, ``wait`` wakeups, and the cache of recently finished tasks.

Callbacks run on one thread of the coordinator, in the order the changes were stored, so each
task's callbacks arrive in order; an exception in a callback is logged and never stalls anything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final, Protocol

from taskengine import models, registry

__all__ = ["FinishedCache", "Publisher", "Signal", "Wakeup"]

log = logging.getLogger(__name__)

#: How long a finished task's final snapshot stays available to ``wait``.
FINISHED_TTL: Final = 60.0
#: Bounds on the finished-task cache: whichever is reached first evicts the oldest entries.
FINISHED_MAX_ENTRIES: Final = 100_000
FINISHED_MAX_BYTES: Final = 256 * 1024 * 1024

_Waiter = list[models.BackgroundTask | None]


class Wakeup(Protocol):
    """What a waiter hands ``subscribe``: ``threading.Event`` or :class:`Signal` will do."""

    def set(self) -> None:
        """Wake the waiter (called once, by the publisher)."""

    def is_set(self) -> bool:
        """Whether ``set`` was called."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds passed; whether it was set."""
        ...


class Signal:
    """A one-shot wakeup on one lock, for ``TaskEngine.wait``.

    ``threading.Event`` builds a condition variable, and each ``wait`` a further lock: on the
    round trip of a short task that is a measurable share of the caller's time.  A lock held
    from the start and released by ``set`` does the same job for a single waiter.
    """

    __slots__ = ("_is_set", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._is_set = False

    def set(self) -> None:
        """Wake the waiter; later waits return at once."""
        if self._is_set:
            return
        self._is_set = True
        with contextlib.suppress(RuntimeError):  # a racing second set found it released
            self._lock.release()

    def is_set(self) -> bool:
        """Whether ``set`` was called."""
        return self._is_set

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds passed; whether it was set."""
        if self._is_set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            with contextlib.suppress(RuntimeError):
                self._lock.release()  # stays released: the signal stays set
        return self._is_set


class FinishedCache:
    """Final snapshots of finished tasks, kept at least ``ttl`` seconds within memory bounds."""

    def __init__(
        self,
        ttl: float = FINISHED_TTL,
        max_entries: int = FINISHED_MAX_ENTRIES,
        max_bytes: int = FINISHED_MAX_BYTES,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: collections.OrderedDict[str, tuple[float, models.BackgroundTask]] = (
            collections.OrderedDict()
        )
        self._bytes = 0

    @staticmethod
    def _size(task: models.BackgroundTask) -> int:
        return len(task.payload_blob) + len(task.result_blob or b"") + 512

    def add(self, task: models.BackgroundTask) -> None:
        """Remember ``task``'s final snapshot (replacing an older one)."""
        old = self._entries.pop(task.id, None)
        if old is not None:
            self._bytes -= self._size(old[1])
        self._entries[task.id] = (time.monotonic(), task)
        self._bytes += self._size(task)
        self._evict()

    def _evict(self) -> None:
        horizon = time.monotonic() - self._ttl
        while self._entries:
            stamp, task = next(iter(self._entries.values()))
            over = len(self._entries) > self._max_entries or self._bytes > self._max_bytes
            if stamp >= horizon and not over:
                break
            self._entries.popitem(last=False)
            self._bytes -= self._size(task)

    def get(self, task_id: str) -> models.BackgroundTask | None:
        """The cached final snapshot, or None."""
        entry = self._entries.get(task_id)
        return None if entry is None else entry[1]

    def discard(self, task_id: str) -> None:
        """Forget a task (it was revived by ``retry``)."""
        entry = self._entries.pop(task_id, None)
        if entry is not None:
            self._bytes -= self._size(entry[1])


class Publisher:
    """Fans stored changes out to callbacks and waiters.

    Args:
        lookup: returns the registration of a task type, or None.
        on_retention: told the earliest ``date_retain_until`` of each batch of finished tasks
            (the retention sweep uses it to wake up in time).
    """

    def __init__(
        self,
        lookup: Callable[[str], registry.HandlerSpec | None],
        on_retention: Callable[[datetime], None] | None = None,
    ) -> None:
        self._lookup = lookup
        self._on_retention = on_retention
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[Wakeup, _Waiter]]] = {}
        self._finished = FinishedCache()
        # One queue item per stored batch: a wakeup of the callback thread per batch, not per task.
        self._queue: queue.SimpleQueue[
            list[tuple[registry.StateChangeCallback, models.BackgroundTask]]
            | threading.Event
            | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the callback thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run_callbacks, name="taskengine-callbacks", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Wake every waiter, run the callbacks already queued, end the callback thread.

        Waiters wake with no snapshot (the engine stopped); the thread is joined for up to
        ``timeout`` seconds (not at all when ``stop`` runs inside a callback).
        """
        with self._lock:
            self._closed = True
            waiters = [entry for entries in self._waiters.values() for entry in entries]
            self._waiters.clear()
        for event, _ in waiters:
            event.set()
        if self._thread is not None:
            self._queue.put(None)
            if self._thread is not threading.current_thread():  # stop() from a callback
                self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float) -> bool:
        """Wait until every callback queued so far has run (inline execution's determinism).

        Returns False if that took longer than ``timeout``; returns at once when the callback
        thread is not running or when called from a callback (it would wait for itself).
        """
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout)

    def _run_callbacks(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if isinstance(batch, threading.Event):
                batch.set()  # a flush() marker: every earlier callback has run
                continue
            for callback, task in batch:
                try:
                    outcome = callback(task)
                    if inspect.isawaitable(outcome):
                        asyncio.run(_await(outcome))
                except Exception:
                    log.exception(
                        "state-change callback failed for task %s",
                        task.id,
                        extra={"task_id": task.id, "task_type": task.type},
                    )

    def publish(self, changes: Iterable[tuple[models.BackgroundTask, bool]]) -> None:
        """Announce stored changes, each ``(task, status_changed)``.

        Called in store order, under the writer's lock, once per stored batch.
        """
        calls: list[tuple[registry.StateChangeCallback, models.BackgroundTask]] = []
        earliest: datetime | None = None
        woken: list[tuple[Wakeup, _Waiter, models.BackgroundTask]] = []
        with self._lock:
            for task, status_changed in changes:
                if status_changed:
                    spec = self._lookup(task.type)
                    if spec is not None and spec.state_change_callback is not None:
                        calls.append((spec.state_change_callback, task))
                if task.status.is_final:
                    self._finished.add(task)
                    # retain_for=0: the finishing write deleted the task, nothing to sweep
                    # (waking the sweeper for each such task cost a thread switch and two
                    # store reads per task).
                    until = None if task.retain_for == 0 else task.date_retain_until
                    if until is not None and (earliest is None or until < earliest):
                        earliest = until
                    woken.extend((e, box, task) for e, box in self._waiters.pop(task.id, []))
                elif status_changed and task.status is models.TaskStatus.PENDING:
                    self._finished.discard(task.id)
        if calls:
            self._queue.put(calls)
        if earliest is not None and self._on_retention is not None:
            self._on_retention(earliest)
        for event, box, task in woken:
            box.append(task)
            event.set()

    def removed(self, task_id: str) -> None:
        """Announce that a task was removed: its waiters wake with no snapshot."""
        with self._lock:
            waiters = self._waiters.pop(task_id, [])
        for event, box in waiters:
            box.append(None)
            event.set()

    def subscribe(self, task_id: str, event: Wakeup | None = None) -> tuple[Wakeup, _Waiter]:
        """Register interest in ``task_id`` finishing; check the store only after this.

        ``event`` (a new :class:`Signal` by default) is set once the box holds the final
        snapshot, None for a removed task, or nothing when the engine stopped.  An event whose
        ``set`` also wakes an asyncio loop lets ``AsyncTaskEngine.wait`` wait without a thread.
        """
        event = Signal() if event is None else event
        box: _Waiter = []
        with self._lock:
            if self._closed:
                event.set()  # an empty box after the event: the engine stopped
            else:
                self._waiters.setdefault(task_id, []).append((event, box))
        return event, box

    def unsubscribe(self, task_id: str, event: Wakeup) -> None:
        """Drop a registration made by :meth:`subscribe`."""
        with self._lock:
            entries = self._waiters.get(task_id)
            if entries is None:
                return
            entries[:] = [entry for entry in entries if entry[0] is not event]
            if not entries:
                del self._waiters[task_id]

    def finished(self, task_id: str) -> models.BackgroundTask | None:
        """The final snapshot of a recently finished task, if still cached."""
        with self._lock:
            return self._finished.get(task_id)


async def _await(awaitable: object) -> None:
    await awaitable  # type: ignore[misc]
