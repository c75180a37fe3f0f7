"""The reactor: the one coordinator thread that runs every pool.

Each turn it sleeps in the supervisor's ``select`` (every worker's pipe and sentinel, and a
wake-up pipe) until the next timer (a due task, an execution deadline, an idle shutdown, a
backoff); the supervisor reads what workers sent and notices deaths; then the reactor runs the
commands other threads queued, the supervisor acts on its timers, and the dispatch claims due
tasks for free workers and stores the turn's outcomes in one batch (group commit).  Only the
thread that holds the turn lock touches pools and worker handles: the reactor thread, which
lets go of it only while it sleeps in ``select``.  A create that finds an idle worker of its
type takes it then and runs the dispatch itself (:meth:`Reactor.wake_for`), which spares a
short task the hand-off to the reactor thread.  Other threads reach the loop through
:meth:`Reactor.submit` and :meth:`Reactor.wake`.

The parts: ``pool/supervisor.py`` owns the processes, pipes, exits and timers;
``dispatch.py`` owns claims, outcomes, writes and reconciliation; this module owns the thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from multiprocessing.context import BaseContext
from typing import Final, TypeVar

from taskengine.coordinator import dispatch, writer
from taskengine.core import clock, handlers
from taskengine.pool import pool, supervisor
from taskengine.stores import base

__all__ = ["Reactor"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between SIGTERM and SIGKILL when an attempt times out.
KILL_GRACE: Final = supervisor.KILL_GRACE
#: Longest sleep of the loop even with no timer due.
MAX_SLEEP: Final = 30.0
#: How often the store is asked for due work although nothing here changed: tasks created or
#: retried by another process (a CLI, an engine that is not dispatching) are found this way.
POLL_INTERVAL: Final = 1.0


class Reactor:
    """Runs the pools of one engine on a dedicated thread."""

    def __init__(
        self,
        *,
        store: base.TaskStore,
        task_writer: writer.TaskWriter,
        clock_: clock.Clock,
        node_identity: str,
        max_total_workers: int,
        mp_context: BaseContext,
    ) -> None:
        self._clock = clock_
        self._node = node_identity
        self._workers = supervisor.Supervisor(
            clock_=clock_, node_identity=node_identity, mp_context=mp_context
        )
        self._dispatch = dispatch.Dispatch(
            store=store,
            task_writer=task_writer,
            clock_=clock_,
            node_identity=node_identity,
            workers=self._workers,
            max_total_workers=max_total_workers,
        )
        self._commands: list[Callable[[], None]] = []
        self._commands_lock = threading.Lock()
        # Due times of tasks created since the last turn, per type (``wake_for``).
        self._due_notes: dict[str, datetime] = {}
        self._wake_r, self._wake_w = os.pipe()
        # Whether a wake-up byte is in the pipe, unread (``_ping``).
        self._wake_pending = False
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._workers.watch_wakeups(self._wake_r)
        self._thread = threading.Thread(target=self._main, name="taskengine-reactor", daemon=True)
        self._next_poll = 0.0
        self._stop_deadline: float | None = None
        self._finished = threading.Event()
        # Held by whichever thread runs a turn: the reactor thread, except while it sleeps in
        # select, when a create may run the dispatch itself (``_dispatch_here``).
        self._turn_lock = threading.Lock()
        # The monotonic time the sleeping loop will wake at (None while it is in a turn).
        self._armed_at: float | None = None

    # -- API side (any thread) ------------------------------------------------------------

    def start(self) -> None:
        """Start the reactor thread."""
        self._thread.start()

    def wake(self) -> None:
        """Make the loop run a turn soon and ask the store for due work (a clock jump...)."""
        self._dispatch.dirty = True
        self._ping()

    def wake_for(self, task_type: str, due: datetime) -> None:
        """A task of ``task_type`` was stored, due at ``due``: dispatch now or wake the loop.

        The planner takes the due time as given when it knows the type, so that a create
        costs the loop no store query; otherwise this is :meth:`wake`.  While the loop sleeps
        and a worker of the type is idle, the calling thread claims and sends at once.
        """
        with self._commands_lock:
            known = self._due_notes.get(task_type)
            if known is None or due < known:
                self._due_notes[task_type] = due
        if not self._dispatch_here(task_type):
            self._ping()

    def _dispatch_here(self, task_type: str) -> bool:
        """Run the loop's dispatch on the calling thread while the loop sleeps; True if it did.

        A create that finds an idle worker of its type then reaches that worker without a
        thread hand-off: waking the reactor thread and waiting for its turn was the largest
        step of a short task's round trip (benchmarks/latency_breakdown.py).  It runs only
        when the loop sleeps in ``select`` (the turn lock is free and the loop armed its
        wake-up), no command is queued, no outcome is held back, the engine is not stopping
        and an idle worker of ``task_type`` exists; it starts no worker (the loop does).
        False means the loop must be woken: it did not run, or it left work or a timer the
        loop's armed wake-up would be too late for.
        """
        if not self._turn_lock.acquire(blocking=False):
            return False  # the loop (or another creator) is in a turn: it will see the note
        try:
            armed = self._armed_at
            if (
                armed is None
                or self._finished.is_set()
                or self._stop_deadline is not None
                or self._commands
                or self._dispatch.batch
                or self._workers.outcomes
                or not self._workers.has_idle_worker(task_type)
            ):
                return False
            try:
                self._run_commands()
                self._dispatch.run(start_workers=False)
            except BaseException as exc:
                # A claimed task may now be held by no worker: the next commit's check hands
                # it back (as after a commit that raised).
                self._dispatch.mark_unsure()
                if not isinstance(exc, Exception):
                    self._ping()
                    raise  # KeyboardInterrupt and the like belong to the caller
                log.exception(
                    "dispatching on the creating thread failed; the reactor takes over",
                    extra={"node": self._node},
                )
                return False
            return self._wake_at(time.monotonic()) >= armed
        finally:
            self._turn_lock.release()

    def _ping(self) -> None:
        # One byte per wake-up is enough: while one is unread, the loop is bound to wake and
        # read everything noted before it reads the pipe.  A loop of creates that found no
        # idle worker wrote a byte each, and each write handed the GIL to the woken reactor
        # (135 us of a create's 300 us in a profile of a create loop).
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def submit(self, command: Callable[[], T]) -> Future[T]:
        """Run ``command`` on the reactor thread; its outcome arrives in the future."""
        future: Future[T] = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(command())
                except BaseException as exc:
                    future.set_exception(exc)

        with self._commands_lock:
            self._commands.append(run)
        self.wake()
        return future

    def stop(self, timeout: float) -> None:
        """Stop dispatching, let attempts finish up to ``timeout``, end every worker."""
        deadline = time.monotonic() + timeout

        def begin() -> None:
            self._stop_deadline = self._workers.stop_deadline = deadline

        if self._thread.is_alive():
            self.submit(begin)
            # Workers get the rest of the timeout plus the kill grace; then the loop ends.
            self._finished.wait(timeout + KILL_GRACE + 2.0)
        elif self._thread.ident is None:
            self._finished.set()  # never started: nothing to wait for
        if self._finished.is_set():
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = -1
            self._workers.close()
            for fd in (wake_r, wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- commands (run on the reactor thread) ---------------------------------------------

    def register(self, spec: handlers.HandlerSpec) -> None:
        """Create or replace the pool of ``spec.task_type``."""
        self._workers.register(spec)
        self._dispatch.dirty = True

    def unregister(self, task_type: str) -> None:
        """Shut a pool down gracefully; its pending tasks wait for a new registration."""
        self._workers.unregister(task_type)

    def terminate(self, task_id: str) -> bool:
        """Kill the worker running ``task_id`` (its record was already changed).

        A prefetched attempt has not started: its worker is killed when it would start, so the
        attempt running before it finishes normally.
        """
        return self._workers.terminate(task_id)

    def held_task_ids(self) -> set[str]:
        """Ids of the claims this reactor holds (reactor thread).

        The attempts its workers run or hold queued, and those whose outcome waits in the
        batch for the store (a store that fails for longer than a lease must not see their
        claims lapse and re-run attempts that finished here).
        """
        return self._dispatch.held_ids()

    def pool_facts(self) -> dict[str, pool.PoolFacts]:
        """What each task type's pool looks like now (for stats and tests)."""
        return self._workers.facts()

    # -- the loop ---------------------------------------------------------------------------

    def _main(self) -> None:
        self._turn_lock.acquire()
        try:
            while not self._turn():
                pass
        except Exception:
            log.critical(
                "the taskengine reactor crashed; killing its workers",
                exc_info=True,
                extra={"node": self._node},
            )
            self._workers.kill_all()
        finally:
            self._finished.set()
            self._turn_lock.release()

    def _turn(self) -> bool:
        """One turn of the loop; True when the reactor has finished stopping."""
        now = time.monotonic()
        self._armed_at = wake = self._sleep_until(now)
        self._turn_lock.release()
        try:
            woken = self._workers.wait(max(0.0, wake - now))
        finally:
            self._turn_lock.acquire()
            self._armed_at = None
        if woken:
            # Cleared before reading: a ping from now on writes a byte again, and one before
            # it was noted before this turn reads the notes and commands.
            self._wake_pending = False
            # A short read means the pipe is empty: no second read just to hit EAGAIN (a
            # syscall and an exception on every wake-up, on the latency path).
            with contextlib.suppress(BlockingIOError, OSError):
                while len(os.read(self._wake_r, 4096)) == 4096:
                    pass
        self._run_commands()
        self._workers.check_timers()
        self._take_signals()
        if self._stop_deadline is None:
            self._dispatch.run()
            self._workers.balance()
            self._dispatch.collect()
        else:
            self._workers.stop_step()
            self._dispatch.flush()
        return (
            self._stop_deadline is not None
            and not any(True for _ in self._workers.workers())
            and self._dispatch.nothing_held(self._stop_deadline)
        )

    def _take_signals(self) -> None:
        """Fold the supervisor's news into whether the store is asked for due work."""
        workers = self._workers
        if workers.changed:
            workers.changed = False
            self._dispatch.dirty = True
        if workers.slot_freed:
            workers.slot_freed = False
            # A free slot needs a store query unless the planner already knows when each
            # type has work (it then plans without one).
            if not self._dispatch.planner.knows_all():
                self._dispatch.dirty = True

    def _run_commands(self) -> None:
        if not self._commands and not self._due_notes:
            return  # read without the lock: whatever lands later also pings, for a new turn
        with self._commands_lock:
            commands, self._commands = self._commands, []
            notes, self._due_notes = self._due_notes, {}
        for command in commands:
            command()
        for task_type, due in notes.items():
            if not self._dispatch.planner.note_due(task_type, due):
                self._dispatch.dirty = True

    def _sleep_until(self, now: float) -> float:
        """When the loop wakes next (monotonic); also starts a store poll when one is due."""
        if self._workers.pools and now >= self._next_poll:
            self._next_poll = now + POLL_INTERVAL
            self._dispatch.dirty = True
        return self._wake_at(now)

    def _wake_at(self, now: float) -> float:
        """The earliest timer of the loop (monotonic), from its state alone."""
        self._take_signals()
        wake = now + MAX_SLEEP
        pools = self._workers.pools
        if pools:
            wake = min(wake, self._next_poll)
        timer = self._workers.next_timer(now)
        if timer is not None:
            wake = min(wake, timer)
        retry_at = self._dispatch.retry_at
        if self._dispatch.batch or self._workers.outcomes:
            wake = min(wake, retry_at)
        if self._stop_deadline is not None:
            wake = min(wake, self._stop_deadline)
        elif self._dispatch.dirty and pools:
            wake = min(wake, max(now, retry_at))
        hint = self._dispatch.planner.due_hint
        if hint is not None:
            ahead = (hint - self._clock.now()).total_seconds()
            # Due work waits out a store backoff like everything else (no hot loop).
            wake = min(wake, max(now + max(0.0, ahead), retry_at))
        return wake
