"""``TaskScheduler``: periodic and one-shot callbacks (contract.md#scheduler).

One timing thread keeps a heap of due times and sleeps on a condition variable exactly until
the earliest one (woken early by ``add_task``, ``remove_task``, a finished callback, ``stop``
or a fake clock's ``advance``), so it fires on time without a coarse tick and costs nothing
while idle.  It never runs callbacks or touches the store: a due schedule is handed to a small
thread pool, where the firing first consumes the slot in the schedule store (a
compare-and-set; see ``stores.schedules``) and then calls the callback.  A schedule whose
callback is still running is not handed over again: the slots that pass meanwhile collapse
into one firing when it returns.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import attrs

from taskengine.core import clock as clocks
from taskengine.core import errors, validation
from taskengine.scheduler import callbacks as scheduler_callbacks
from taskengine.scheduler import claim as scheduler_claim
from taskengine.scheduler import targets
from taskengine.scheduler import times as times_
from taskengine.scheduler.times import ScheduledTaskInfo, ScheduledTaskTime
from taskengine.stores import schedules

if TYPE_CHECKING:
    from taskengine.core.connector import BackgroundTaskConnector

__all__ = ["ScheduledTaskInfo", "ScheduledTaskTime", "TaskScheduler"]

log = logging.getLogger(__name__)

#: Longest single sleep of the timing thread: a step of the wall clock is noticed this soon.
_MAX_SLEEP: Final = 5.0
#: Seconds before a firing that failed on a store error is tried again.
_STORE_RETRY: Final = 1.0
_NEW, _STARTED, _STOPPED = "new", "started", "stopped"


@attrs.define(eq=False)
class _Schedule:
    """One added schedule (mutable; guarded by the scheduler's condition)."""

    task_id: str
    times: tuple[ScheduledTaskTime, ...]
    invoker: scheduler_callbacks.Invoker
    record: schedules.ScheduleRecord
    token: int = 0


class TaskScheduler:
    """Runs callbacks at scheduled times; thread-safe.

    Args:
        engine_or_store: where slots are kept: None (in memory), a ``TaskEngine`` or task store
            (a ``SqliteStore`` file's ``schedules`` table; PostgreSQL for a shared store; memory
            for a ``MemoryStore``), or a ``ScheduleStore`` such as ``PgScheduleStore``.
        clock: the time source (a ``FakeClock`` in tests); by default the clock of the engine
            given as ``engine_or_store``, else the wall clock.
        callback_threads: how many callbacks may run at once (each id at most once).

    Raises:
        TaskValidationError: an argument is invalid.
        StoreError: the schedule store cannot be opened.
    """

    def __init__(
        self,
        engine_or_store: object = None,
        *,
        clock: clocks.Clock | None = None,
        callback_threads: int = 4,
    ) -> None:
        if clock is not None and not isinstance(clock, clocks.Clock):
            raise errors.TaskValidationError("clock", clock, "expected a Clock (now, listeners)")
        threads = validation.check_optional_positive_int("callback_threads", callback_threads)
        if threads is None:
            raise errors.TaskValidationError("callback_threads", callback_threads, "expected >= 1")
        self._threads = threads
        self._clock: clocks.Clock = clock or _clock_of(engine_or_store) or clocks.SystemClock()
        self._store, self._owns_store = targets.for_target(engine_or_store)
        self._store.open()
        self._cond = threading.Condition()
        self._schedules: dict[str, _Schedule] = {}
        self._heap: list[tuple[int, int, str]] = []  # (due ms, token, id)
        self._tokens = itertools.count(1)
        self._busy: dict[str, concurrent.futures.Future[None]] = {}
        self._observed = -1  # clock ms at the end of the timing thread's last pass
        self._passes = 0  # passes of the timing thread (tests check it does not tick)
        self._state = _NEW
        self._local = threading.local()  # .task_id: the schedule a callback thread is firing
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._clock.add_listener(self._wake)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> TaskScheduler:
        """Start firing; calling it again does nothing.

        Raises:
            EngineStoppedError: the scheduler was stopped.
        """
        with self._cond:
            if self._state == _STOPPED:
                raise errors.EngineStoppedError("the scheduler was stopped")
            if self._state == _STARTED:
                return self
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="taskengine-scheduler-callback"
            )
            self._thread = threading.Thread(
                target=self._run, name="taskengine-scheduler", daemon=True
            )
            self._state = _STARTED
            self._thread.start()
        return self

    def stop(self, timeout: float | timedelta = 30.0) -> None:
        """Stop firing, wait up to ``timeout`` seconds for running callbacks, close the store.

        Slots already consumed stay consumed; no new slot is consumed after ``stop``.  The
        stored slots stay, so a new scheduler on the same durable store continues them.
        Calling it again does nothing.
        """
        seconds = validation.check_duration("timeout", timeout)
        assert seconds is not None
        with self._cond:
            if self._state == _STOPPED:
                return
            self._state = _STOPPED
            self._cond.notify_all()
            for task_id, future in list(self._busy.items()):
                if future.cancel():  # handed over but not started: it never runs
                    del self._busy[task_id]
        self._clock.remove_listener(self._wake)
        deadline = time.monotonic() + seconds
        if self._thread is not None:
            self._thread.join(seconds)
        # A callback that calls stop() must not wait for itself.
        own = getattr(self._local, "task_id", None)
        with self._cond:
            self._cond.wait_for(
                lambda: not set(self._busy) - {own}, max(0.0, deadline - time.monotonic())
            )
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> TaskScheduler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- schedules ------------------------------------------------------------------------

    def add_task(
        self,
        task_id: str,
        times: ScheduledTaskTime | Iterable[ScheduledTaskTime],
        callback: Callable[..., Any],
    ) -> None:
        """Add a schedule, or replace the one with this id.

        With a durable store, a schedule whose stored times equal ``times`` continues from its
        stored slot (so a restarted application neither skips nor repeats a slot); otherwise
        its first slots are computed from now and stored.

        Args:
            task_id: the schedule's id, a non-empty str of at most 255 characters.
            times: one ``ScheduledTaskTime`` or a non-empty list of them; the callback fires
                at each slot of each of them.
            callback: a function of no argument, or of one (the due time); ``async def``
                allowed.

        Raises:
            TaskValidationError: an argument is invalid.
            EngineStoppedError: the scheduler was stopped.
            StoreError: the schedule store failed.
        """
        schedule_id = validation.check_identifier_text("task_id", task_id)
        entries = times_.check_times(times)
        invoker = scheduler_callbacks.make_invoker(callback)
        self._check_not_stopped()
        key = times_.fingerprint(entries)
        fresh = schedules.ScheduleRecord(
            schedule_id=schedule_id,
            times_key=key,
            slots=times_.initial_slots(entries, self._store.now() or self._clock.now()),
        )
        record = self._store.insert_or_get(fresh)
        if record.times_key != key or len(record.slots) != len(entries):
            self._store.replace(fresh)
            record = fresh
        with self._cond:
            self._check_not_stopped()
            schedule = _Schedule(schedule_id, entries, invoker, record)
            self._schedules[schedule_id] = schedule
            self._push(schedule, record.next_trigger)
            self._cond.notify_all()

    def remove_task(self, task_id: str) -> bool:
        """Remove a schedule and its stored slots; safe from inside its own callback.

        A callback already running finishes; no further slot fires.

        Returns:
            True if a schedule was added here or stored under this id.

        Raises:
            TaskValidationError: ``task_id`` is not a str.
            StoreError: the schedule store failed (the schedule is removed here anyway).
        """
        schedule_id = validation.check_task_id(task_id)
        with self._cond:
            removed = self._schedules.pop(schedule_id, None) is not None
            self._cond.notify_all()
        stored = self._store.delete(schedule_id)
        return removed or stored

    def tasks_info(self) -> ScheduledTaskInfo:
        """A copy of every schedule's times, each showing its pending slot.

        As in TWIN, each returned ``ScheduledTaskTime`` has ``next_trigger_time`` set to that
        time's next due time (None once a one-shot has fired); the other fields are as added.
        """
        with self._cond:
            current = [(i, s.times, s.record) for i, s in self._schedules.items()]
        return ScheduledTaskInfo(
            tasks={
                i: [
                    attrs.evolve(time, next_trigger_time=slot)
                    for time, slot in zip(times, record.slots, strict=True)
                ]
                for i, times, record in current
            },
            next_triggers={i: record.next_trigger for i, _, record in current},
        )

    def wait_idle(self, timeout: float | None = 30.0) -> None:
        """Block until every slot due at the clock's current time has fired and returned.

        Meant for tests with a ``FakeClock``: ``clock.advance(...)`` then ``wait_idle()``.

        Raises:
            TimeoutError: still busy after ``timeout`` seconds.
            EngineStoppedError: the scheduler is not running.
        """
        target = clocks.to_millis(self._clock.now())
        with self._cond:
            if self._state != _STARTED:
                raise errors.EngineStoppedError("wait_idle needs a started scheduler")
            if not self._cond.wait_for(lambda: self._is_idle(target), timeout):
                raise TimeoutError(f"the scheduler was still busy after {timeout}s")

    @staticmethod
    def create_task_callback(
        engine: BackgroundTaskConnector, task_type: str, payload: Any = None, **options: Any
    ) -> Callable[[], str]:
        """A callback that creates one engine task per firing, so the work runs in the pools.

        ``scheduler.add_task("report", times, TaskScheduler.create_task_callback(engine,
        "report", {"kind": "daily"}, retain_for=3600))``.  Options are those of
        ``TaskEngine.create``; they are checked now, the payload at each firing.

        Raises:
            TaskValidationError: not an engine, a bad ``task_type`` or an unknown option.
        """
        return scheduler_callbacks.task_creating_callback(engine, task_type, payload, **options)

    # -- the timing thread ----------------------------------------------------------------

    def _check_not_stopped(self) -> None:
        if self._state == _STOPPED:
            raise errors.EngineStoppedError("the scheduler was stopped")

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _push(self, schedule: _Schedule, due: datetime | None) -> None:
        """(Re)queue ``schedule`` at ``due``; older heap entries of it become stale."""
        schedule.token = next(self._tokens)
        if due is not None:
            heapq.heappush(self._heap, (clocks.to_millis(due), schedule.token, schedule.task_id))
        if len(self._heap) > 2 * len(self._schedules) + 64:
            # Replaced or removed schedules leave stale entries until their due time, which may
            # be far away: drop them before they pile up.
            self._heap = [entry for entry in self._heap if self._live(entry[1], entry[2])]
            heapq.heapify(self._heap)

    def _live(self, token: int, task_id: str) -> _Schedule | None:
        schedule = self._schedules.get(task_id)
        return schedule if schedule is not None and schedule.token == token else None

    def _is_idle(self, target: int) -> bool:
        if self._busy or self._observed < target:
            return False
        return not any(due <= target and self._live(t, i) for due, t, i in self._heap)

    def _run(self) -> None:
        with self._cond:
            while self._state == _STARTED:
                now = clocks.to_millis(self._clock.now())
                while self._heap and self._heap[0][0] <= now:
                    _, token, task_id = heapq.heappop(self._heap)
                    schedule = self._live(token, task_id)
                    if schedule is None:
                        continue  # removed, replaced or requeued since
                    if task_id in self._busy:
                        # Its callback still runs: requeued when it returns (slots collapse).
                        schedule.token = next(self._tokens)
                        continue
                    assert self._executor is not None
                    self._busy[task_id] = self._executor.submit(self._fire, schedule)
                self._observed = now
                self._passes += 1
                self._cond.notify_all()
                timeout = _MAX_SLEEP
                if self._heap:
                    timeout = min(timeout, (self._heap[0][0] - self._precise_ms(now)) / 1000)
                self._cond.wait(timeout)

    def _precise_ms(self, now_ms: int) -> float:
        """Now in fractional ms (clocks truncate to whole ms: up to 1 ms of oversleep)."""
        if type(self._clock) is clocks.SystemClock:  # a subclass may shift the time
            return time.time() * 1000
        return float(now_ms)

    # -- firing (callback threads) --------------------------------------------------------

    def _fire(self, schedule: _Schedule) -> None:
        retry_at: datetime | None = None
        won = False
        record = schedule.record
        try:
            if self._state == _STARTED:
                won, record, retry_at = scheduler_claim.claim_slot(
                    self._store, self._clock, schedule.times, record
                )
        except Exception:
            log.exception("scheduler: cannot claim the slot of %r", schedule.task_id)
            retry_at = self._clock.now() + timedelta(seconds=_STORE_RETRY)
        try:
            if won:
                slot = schedule.record.next_trigger
                assert slot is not None
                with self._cond:
                    if self._schedules.get(schedule.task_id) is schedule:
                        schedule.record = record
                self._local.task_id = schedule.task_id
                try:
                    schedule.invoker(slot)
                finally:
                    self._local.task_id = None
        except BaseException:  # a callback's failure is logged; the schedule goes on
            log.exception(
                "scheduled callback %r raised",
                schedule.task_id,
                extra={"task_id": schedule.task_id},
            )
        finally:
            with self._cond:
                del self._busy[schedule.task_id]
                live = self._schedules.get(schedule.task_id)
                if live is schedule:
                    if not won:
                        live.record = record
                    self._push(live, retry_at or live.record.next_trigger)
                elif live is not None:
                    self._push(live, live.record.next_trigger)  # a replacement waited for us
                self._cond.notify_all()


def _clock_of(target: object) -> clocks.Clock | None:
    """The clock of an engine (its ``clock`` property), so that both share one time source."""
    found = getattr(target, "clock", None)
    return found if isinstance(found, clocks.Clock) else None
