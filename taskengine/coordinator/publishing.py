"""What happens after a change is stored.

State-change callbacks, ``wait`` wakeups (and ``FinishWait``, the order a ``wait`` follows),
the cache of recently finished tasks, and the watcher that notices tasks other processes finish
while a ``wait`` watches them.

Size: the pieces here make one argument, that a ``wait`` never misses its task's finish:
:class:`FinishWait` subscribes before it looks at the store, :meth:`Publisher.publish` takes
a finished task's subscribers under the lock that fills the finished cache, the
:class:`Watcher` reads a newly watched task once more and calls the writer's barrier before
:meth:`Publisher.observed`, which drops what the engine announced itself.  Each step is only
right given the others, so they are read (and reviewed) together.  ``Signal`` and
``FinishedCache`` are small and serve only the publisher.

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
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import datetime
from typing import Final, Protocol

import attrs

from taskengine.core import errors, handlers, models
from taskengine.stores import base

__all__ = ["FinishWait", "FinishedCache", "Publisher", "Signal", "Wakeup", "Watcher"]

log = logging.getLogger(__name__)

#: How long a finished task's final snapshot stays available to ``wait``.
FINISHED_TTL: Final = 60.0
#: Bounds on the finished-task cache: whichever is reached first evicts the oldest entries.
FINISHED_MAX_ENTRIES: Final = 100_000
FINISHED_MAX_BYTES: Final = 256 * 1024 * 1024
#: Seconds between two looks at a store's change token while a ``wait`` watches a task: the
#: bound on how late ``wait`` sees a change committed by another process (SQLite, MemoryStore).
WATCH_INTERVAL: Final = 0.1
#: A store without a change token has each watched task read after 10 ms, then at doubling
#: intervals up to this many seconds (PostgreSQL): the bound there.
WATCH_POLL_MAX: Final = 0.5
_WATCH_POLL_FIRST: Final = 0.01
#: An idle watcher thread lingers this long for the next ``wait`` before it ends, so a stream
#: of short waits does not start a thread each.
WATCH_LINGER: Final = 5.0

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
        lookup: Callable[[str], handlers.HandlerSpec | None],
        on_retention: Callable[[datetime], None] | None = None,
    ) -> None:
        self._lookup = lookup
        self._on_retention = on_retention
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[Wakeup, _Waiter]]] = {}
        self._finished = FinishedCache()
        # One queue item per stored batch: a wakeup of the callback thread per batch, not per task.
        self._queue: queue.SimpleQueue[
            list[tuple[handlers.StateChangeCallback, models.BackgroundTask]]
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
        calls: list[tuple[handlers.StateChangeCallback, models.BackgroundTask]] = []
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

    def observed(self, task_id: str, task: models.BackgroundTask | None) -> None:
        """Announce what the :class:`Watcher` read of a watched task: final, or gone (None).

        A final snapshot is announced like a stored status change (callback queued, snapshot
        cached, waiters woken) unless it is the one this engine announced itself: the watcher
        may read a change of this engine's between its commit and its announcement (it calls
        the writer's barrier before this).  A task that is gone wakes its waiters with no
        snapshot; when this engine deleted it, they were woken already and none are left.
        """
        if task is None:
            self.removed(task_id)
            return
        with self._lock:
            cached = self._finished.get(task_id)
        if cached is not None and _same_change(cached, task):
            return
        self.publish([(task, True)])


class FinishWait:
    """One ``wait`` for one task to finish, taken in the order that loses no wakeup.

    Made by ``TaskEngine._open_wait`` (its internal interface for both waits), it is subscribed
    to the task from the start; the waiter then looks at the store (:meth:`finished_now`), and
    only if the task is not finished blocks on :attr:`wakeup` inside :meth:`watching`, then
    takes :meth:`result`.  A finish between the look and the block is announced to the
    subscription, so it is never missed.  ``close`` (or the end of the ``with`` block)
    unsubscribes.  ``TaskEngine.wait`` blocks a thread on a :class:`Signal`;
    ``AsyncTaskEngine.wait`` hands in a wakeup that resolves a future on its loop.

    Args:
        publisher: the engine's publisher.
        watcher: the engine's watcher.
        task_id: the (checked) id of the task.
        timeout: the (checked) seconds to wait, None for no limit; kept for the waiter.
        look: reads the task: its final snapshot, None if unfinished; raises
            ``TaskNotFoundError`` for an unknown id.
        wakeup: what the publisher sets; a new :class:`Signal` by default.
    """

    __slots__ = ("_box", "_look", "_publisher", "_watcher", "task_id", "timeout", "wakeup")

    def __init__(
        self,
        publisher: Publisher,
        watcher: Watcher,
        task_id: str,
        timeout: float | None,
        look: Callable[[str], models.BackgroundTask | None],
        wakeup: Wakeup | None = None,
    ) -> None:
        self._publisher = publisher
        self._watcher = watcher
        self._look = look
        self.task_id = task_id
        self.timeout = timeout
        self.wakeup, self._box = publisher.subscribe(task_id, wakeup)

    def finished_now(self) -> models.BackgroundTask | None:
        """The final snapshot if the task has finished already, None if not (reads the store).

        Raises:
            TaskNotFoundError: the id is unknown.
        """
        return self._look(self.task_id)

    def watching(self) -> contextlib.AbstractContextManager[None]:
        """Have the watcher look for changes other processes commit, for the ``with`` block."""
        return self._watcher.watching(self.task_id)

    def result(self) -> models.BackgroundTask:
        """What a woken wait returns: the announced final snapshot, or the matching error.

        Raises:
            TaskNotFoundError: the task was removed.
            EngineStoppedError: the engine stopped.
        """
        if not self._box:
            raise errors.EngineStoppedError(f"the engine stopped while waiting for {self.task_id}")
        final = self._box[0]
        if final is None:
            raise errors.TaskNotFoundError(self.task_id)
        return final

    def close(self) -> None:
        """Drop the subscription."""
        self._publisher.unsubscribe(self.task_id, self.wakeup)

    def __enter__(self) -> FinishWait:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _same_change(one: models.BackgroundTask, other: models.BackgroundTask) -> bool:
    return (
        one.status is other.status
        and one.attempts == other.attempts
        and one.date_modified == other.date_modified
    )


@attrs.define
class _Watched:
    """A watched task: how many ``wait`` calls watch it, and when to read it (polling)."""

    count: int
    due: float
    step: float = _WATCH_POLL_FIRST


class Watcher:
    """Notices watched tasks that another process finishes or removes.

    The engine announces its own changes at once (:meth:`Publisher.publish`); a change that
    another process commits (a worker node, ``taskengine tasks cancel``, another PostgreSQL
    node) reaches no announcement.  While a ``wait`` watches a task, one thread per engine
    looks at the store: every :data:`WATCH_INTERVAL` seconds at a store's change token
    (``base.ChangeDetector``), reading every watched task again when it moved; on a store
    without one, each watched task is read 10 ms after it is watched, then at doubling
    intervals up to :data:`WATCH_POLL_MAX`.  A newly watched task is always read once at the
    next look, so a commit between its waiter's own read and its registration is not missed.
    A store that tells of finished tasks (``base.FinishNotifier``: PostgreSQL's ``NOTIFY``)
    has the watched ones among them read at once, so a ``wait`` on a task another node runs
    returns as soon as that node stored it; the polling goes on beside, for a lost notice.
    What is found final or gone goes to :meth:`Publisher.observed`.  The thread ends after
    :data:`WATCH_LINGER` seconds with nothing watched, and starts again with the next watch.

    Args:
        store: the engine's store.
        publisher: the engine's publisher.
        barrier: the writer's barrier (every change this engine stored is announced on return).
    """

    def __init__(
        self, store: base.TaskStore, publisher: Publisher, barrier: Callable[[], None]
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._barrier = barrier
        self._detector = store if isinstance(store, base.ChangeDetector) else None
        self._status = store if isinstance(store, base.StatusReader) else None
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}
        self._fresh: set[str] = set()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False
        # Watched tasks a store notice named finished: read at the next look.
        self._hinted: set[str] = set()
        if isinstance(store, base.FinishNotifier):
            store.on_finished(self._on_finished)

    def _on_finished(self, task_ids: Collection[str]) -> None:
        # Tasks this engine finished itself were announced already: no read for them.
        with self._lock:
            hinted = [
                task_id
                for task_id in task_ids
                if task_id in self._watched and self._publisher.finished(task_id) is None
            ]
            if not hinted:
                return
            self._hinted.update(hinted)
        self._wake.set()

    @contextlib.contextmanager
    def watching(self, task_id: str) -> Iterator[None]:
        """Watch ``task_id`` for the duration of the ``with`` block."""
        self.watch(task_id)
        try:
            yield
        finally:
            self.unwatch(task_id)

    def watch(self, task_id: str) -> None:
        """Start watching ``task_id`` (counted: each ``watch`` needs its ``unwatch``)."""
        with self._lock:
            if self._closed:
                return
            entry = self._watched.get(task_id)
            if entry is None:
                due = time.monotonic() + _WATCH_POLL_FIRST
                self._watched[task_id] = _Watched(count=1, due=due)
            else:
                entry.count += 1
            self._fresh.add(task_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskengine-watcher", daemon=True
                )
                self._thread.start()
            elif self._detector is None:
                self._wake.set()  # its next read may now be due sooner than the thread sleeps

    def unwatch(self, task_id: str) -> None:
        """Stop one watch of ``task_id``."""
        with self._lock:
            entry = self._watched.get(task_id)
            if entry is None:
                return
            entry.count -= 1
            if entry.count <= 0:
                del self._watched[task_id]
                self._fresh.discard(task_id)

    def stop(self, timeout: float) -> None:
        """End the thread (joined for up to ``timeout`` seconds); later watches do nothing."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        token: object = _NO_TOKEN
        idle_since = time.monotonic()
        while True:
            self._wake.wait(self._sleep())
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                if self._closed or (not self._watched and now - idle_since >= WATCH_LINGER):
                    self._thread = None
                    return
                if not self._watched:
                    continue
                idle_since = now
                fresh, self._fresh = self._fresh, set()
                hinted, self._hinted = self._hinted, set()
                everything = list(self._watched)
            try:
                if self._detector is not None:
                    # The token first, the rows after: a commit after this look moves the next.
                    new = self._detector.change_token()
                    ids = everything if new != token else [i for i in everything if i in fresh]
                    token = new
                else:
                    ids = self._due_for_polling(now)
                ids = list(dict.fromkeys([*[i for i in everything if i in hinted], *ids]))
                found = self._read_finished(ids)
            except errors.StoreError as exc:
                token = _NO_TOKEN  # look again at everything once the store answers
                log.debug("watcher could not read the store: %s", exc)
                continue
            if found:
                self._barrier()
                for task_id, task in found:
                    self._publisher.observed(task_id, task)

    def _sleep(self) -> float:
        if self._detector is not None:
            return WATCH_INTERVAL
        with self._lock:
            if not self._watched:
                return WATCH_POLL_MAX
            soonest = min(entry.due for entry in self._watched.values())
        return min(WATCH_POLL_MAX, max(0.0, soonest - time.monotonic()))

    def _due_for_polling(self, now: float) -> list[str]:
        with self._lock:
            due = []
            for task_id, entry in self._watched.items():
                if entry.due <= now:
                    due.append(task_id)
                    entry.step = min(entry.step * 2, WATCH_POLL_MAX)
                    entry.due = now + entry.step
            return due

    def _read_finished(self, ids: Iterable[str]) -> list[tuple[str, models.BackgroundTask | None]]:
        found: list[tuple[str, models.BackgroundTask | None]] = []
        for task_id in ids:
            if self._status is not None:
                # An unfinished task (the usual answer) is not read whole: its payload may be
                # large, and a store may copy it out to answer get().
                status = self._status.status_of(task_id)
                if status is not None and not status[0].is_final:
                    continue
            task = self._store.get(task_id)
            if task is None or task.status.is_final:
                found.append((task_id, task))
        return found


_NO_TOKEN: Final = object()


async def _await(awaitable: object) -> None:
    await awaitable  # type: ignore[misc]
