"""The reactor: the one coordinator thread that runs every pool.

It waits (``multiprocessing.connection.wait``) on every worker's pipe, every worker's process
sentinel and a wakeup pipe, with a timeout that ends at the next timer (a due task, an execution
deadline, an idle shutdown, a backoff).  Each turn it reads what workers sent, notices workers
that died, acts on timers, claims due tasks for free workers, and writes the outcomes to the
store in one batch (group commit).  Only the thread that holds the turn lock touches pools and
worker handles: the reactor thread, which lets go of it only while it sleeps in ``select``.  A
create that finds an idle worker of its type takes it then and runs the dispatch itself
(:meth:`Reactor.wake_for`), which spares a short task the hand-off to the reactor thread.  Other
threads reach the loop through :meth:`Reactor.submit` and :meth:`Reactor.wake`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import selectors
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import datetime, timedelta
from multiprocessing.context import BaseContext
from typing import Any, Final, TypeVar

import psutil

from taskengine.coordinator import planner, writer
from taskengine.core import clock, errors, handlers, models, transitions
from taskengine.pool import messages, outcomes, pool, process
from taskengine.stores import base

__all__ = ["Reactor"]

log = logging.getLogger(__name__)

T = TypeVar("T")
State = process.WorkerState
Status = models.TaskStatus
Reason = process.KillReason

#: Seconds between SIGTERM and SIGKILL when an attempt times out.
KILL_GRACE: Final = 1.0
#: Seconds a worker may take to import its handler and initialise.
START_TIMEOUT: Final = 60.0
#: Seconds a worker may spend in its shutdown method before it is killed.
SHUTDOWN_GRACE: Final = 5.0
#: Longest sleep of the loop even with no timer due.
MAX_SLEEP: Final = 30.0
#: How often the store is asked for due work although nothing here changed: tasks created or
#: retried by another process (a CLI, an engine that is not dispatching) are found this way.
POLL_INTERVAL: Final = 1.0
#: First and largest pause after a store error before writing again.
STORE_RETRY_FIRST: Final = 0.05
STORE_RETRY_MAX: Final = 5.0


def _run_bytes(task: models.BackgroundTask) -> int:
    """About how many bytes the Run message of ``task`` puts in a worker's pipe."""
    return len(task.payload_blob) + pool.RUN_OVERHEAD_BYTES


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data (or EOF) right now, without blocking."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


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
        self._store = store
        self._writer = task_writer
        self._clock = clock_
        # Deadlines follow time.monotonic; under an injected clock, that clock's too.
        self._real_time = isinstance(clock_, clock.SystemClock)
        self._node = node_identity
        self._mp_context = mp_context
        self._pools: dict[str, pool.WorkerPool] = {}
        self._planner = planner.Planner(self._pools, store, max_total_workers, self._store_failed)
        self._commands: list[Callable[[], None]] = []
        self._commands_lock = threading.Lock()
        # Due times of tasks created since the last turn, per type (``wake_for``).
        self._due_notes: dict[str, datetime] = {}
        self._wake_r, self._wake_w = os.pipe()
        # Whether a wake-up byte is in the pipe, unread (``_ping``).
        self._wake_pending = False
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # One long-lived epoll set: building a new selector per turn (as
        # multiprocessing.connection.wait does) costs more than the turn's real work.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._main, name="taskengine-reactor", daemon=True)
        self._batch: list[writer.Change] = []
        self._store_retry_at = 0.0
        self._store_backoff = 0.0
        self._unsure = False  # a commit raised: it may have landed all the same (FAULTS 30)
        self._dirty = True
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
        self._dirty = True
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
            each = self._pools.get(task_type)
            if (
                armed is None
                or self._finished.is_set()
                or self._stop_deadline is not None
                or self._commands
                or self._batch
                or each is None
                or not each.idle_workers()
            ):
                return False
            try:
                self._run_commands()
                self._dispatch(start_workers=False)
            except BaseException as exc:
                # A claimed task may now be held by no worker: the next commit's check hands
                # it back (as after a commit that raised).
                self._unsure = self._dirty = True
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
            self._stop_deadline = deadline

        if self._thread.is_alive():
            self.submit(begin)
            # Workers get the rest of the timeout plus the kill grace; then the loop ends.
            self._finished.wait(timeout + KILL_GRACE + 2.0)
        elif self._thread.ident is None:
            self._finished.set()  # never started: nothing to wait for
        if self._finished.is_set():
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = -1
            self._selector.close()
            for fd in (wake_r, wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- commands (run on the reactor thread) ---------------------------------------------

    def register(self, spec: handlers.HandlerSpec) -> None:
        """Create or replace the pool of ``spec.task_type``."""
        existing = self._pools.get(spec.task_type)
        if existing is None:
            self._pools[spec.task_type] = pool.WorkerPool(spec, self._mp_context)
        else:
            existing.replace_spec(spec)
            self._retire_outdated(existing)
        self._dirty = True

    def unregister(self, task_type: str) -> None:
        """Shut a pool down gracefully; its pending tasks wait for a new registration."""
        found = self._pools.get(task_type)
        if found is not None:
            found.draining = True
            self._retire_outdated(found)
            if not found.workers:
                del self._pools[task_type]

    def terminate(self, task_id: str) -> bool:
        """Kill the worker running ``task_id`` (its record was already changed).

        A prefetched attempt has not started: its worker is killed when it would start, so the
        attempt running before it finishes normally.
        """
        for worker in self._workers():
            if not worker.holds(task_id):
                continue
            head = worker.task
            if head is not None and head.id == task_id and worker.state is not State.STARTING:
                worker.kill(Reason.TERMINATED)
            else:
                worker.terminate_on_start.add(task_id)
            return True
        return False

    def held_task_ids(self) -> set[str]:
        """Ids of the claims this reactor holds (reactor thread).

        The attempts its workers run or hold queued, and those whose outcome waits in the
        batch for the store (a store that fails for longer than a lease must not see their
        claims lapse and re-run attempts that finished here).
        """
        held = {task.id for worker in self._workers() for task in worker.queue}
        held.update(change.task.id for change in self._batch if change.task is not None)
        return held

    def pool_facts(self) -> dict[str, dict[str, Any]]:
        """Worker pids and states per task type (for tests and stats)."""
        return {
            task_type: {
                "pids": [w.pid for w in each.workers],
                "alive": sum(1 for w in each.workers if w.state is not State.KILLED),
                "busy": sum(1 for w in each.workers if w.state is State.BUSY),
                "tasks_done": each.tasks_done,
                "failures": each.failures,
                "crashes": each.crashes,
                "run_seconds_total": each.run_seconds_total,
                "max_worker_count": each.spec.max_worker_count,
            }
            for task_type, each in self._pools.items()
        }

    def _retire_outdated(self, each: pool.WorkerPool) -> None:
        for worker in list(each.workers):
            if each.is_current(worker):
                continue
            if worker.state is State.IDLE:
                self._send_stop(worker)
            elif worker.state in (State.BUSY, State.STARTING):
                worker.retire_after_task = True

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
            for each in self._pools.values():
                for worker in each.workers:
                    worker.kill(Reason.STOP)
        finally:
            self._finished.set()
            self._turn_lock.release()

    def _workers(self) -> Iterable[process.WorkerProcess]:
        for each in self._pools.values():
            yield from each.workers

    def _turn(self) -> bool:
        """One turn of the loop; True when the reactor has finished stopping."""
        now = time.monotonic()
        self._armed_at = wake = self._sleep_until(now)
        self._turn_lock.release()
        timeout = max(0.0, wake - now)
        try:
            events = self._selector.select(timeout)
        finally:
            self._turn_lock.acquire()
            self._armed_at = None
        exited: list[process.WorkerProcess] = []
        for key, _ in events:
            if key.data is None:
                # Cleared before reading: a ping from now on writes a byte again, and one
                # before it was noted before this turn reads the notes and commands.
                self._wake_pending = False
                # A short read means the pipe is empty: no second read just to hit EAGAIN
                # (a syscall and an exception on every wake-up, on the latency path).
                with contextlib.suppress(BlockingIOError, OSError):
                    while len(os.read(self._wake_r, 4096)) == 4096:
                        pass
                continue
            worker, is_sentinel = key.data
            if is_sentinel:
                exited.append(worker)
            else:
                # Take everything already in the pipe, so one turn (and one group commit)
                # covers every attempt that finished meanwhile.
                while self._receive(worker) and _readable(worker.conn_fd):
                    pass
        for worker in exited:
            self._on_exit(worker)
        self._run_commands()
        self._check_timers()
        if self._stop_deadline is None:
            self._dispatch()
            self._balance()
        else:
            self._stop_step()
            self._flush()
        return (
            self._stop_deadline is not None
            and not any(True for _ in self._workers())
            and self._nothing_held()
        )

    def _watch(self, worker: process.WorkerProcess) -> None:
        self._selector.register(worker.conn_fd, selectors.EVENT_READ, (worker, False))
        self._selector.register(worker.sentinel, selectors.EVENT_READ, (worker, True))

    def _close_conn(self, worker: process.WorkerProcess) -> None:
        """Stop reading a worker's pipe (EOF or garbage); its sentinel reports the death."""
        if worker.conn.closed:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.conn_fd)
        with contextlib.suppress(OSError):
            worker.conn.close()

    def _run_commands(self) -> None:
        if not self._commands and not self._due_notes:
            return  # read without the lock: whatever lands later also pings, for a new turn
        with self._commands_lock:
            commands, self._commands = self._commands, []
            notes, self._due_notes = self._due_notes, {}
        for command in commands:
            command()
        for task_type, due in notes.items():
            if not self._planner.note_due(task_type, due):
                self._dirty = True

    def _sleep_until(self, now: float) -> float:
        """When the loop wakes next (monotonic); also starts a store poll when one is due."""
        if self._pools and now >= self._next_poll:
            self._next_poll = now + POLL_INTERVAL
            self._dirty = True
        return self._wake_at(now)

    def _wake_at(self, now: float) -> float:
        """The earliest timer of the loop (monotonic), from its state alone."""
        wake = now + MAX_SLEEP
        if self._pools:
            wake = min(wake, self._next_poll)
        for worker in self._workers():
            for moment in self._timers_of(worker):
                if moment is not None:
                    wake = min(wake, moment)
        for each in self._pools.values():
            if each.backoff_until > now:
                wake = min(wake, each.backoff_until)
        if self._batch:
            wake = min(wake, self._store_retry_at)
        if self._stop_deadline is not None:
            wake = min(wake, self._stop_deadline)
        elif self._dirty and self._pools:
            wake = min(wake, max(now, self._store_retry_at))
        if self._planner.due_hint is not None:
            ahead = (self._planner.due_hint - self._clock.now()).total_seconds()
            # Due work waits out a store backoff like everything else (no hot loop).
            wake = min(wake, max(now + max(0.0, ahead), self._store_retry_at))
        return wake

    def _timers_of(self, worker: process.WorkerProcess) -> tuple[float | None, ...]:
        spec = self._pools[worker.config.task_type].spec
        idle_at = None
        if worker.state is State.IDLE and spec.idle_shutdown_timeout is not None:
            idle_at = worker.idle_since + spec.idle_shutdown_timeout
        start_at = worker.started_at + START_TIMEOUT if worker.state is State.STARTING else None
        return (worker.deadline, worker.kill_escalate_at, idle_at, start_at)

    # -- messages from workers --------------------------------------------------------------

    def _receive(self, worker: process.WorkerProcess) -> bool:
        """Read one message (the selector said the pipe is readable); False at EOF."""
        try:
            message = messages.receive_to_coordinator(worker.conn)
        except messages.GarbledMessage:
            log.exception(
                "garbled message from worker %s; killing it",
                worker.pid,
                extra={"task_type": worker.config.task_type, "node": self._node},
            )
            worker.kill(Reason.STOP)
            self._close_conn(worker)
            return False
        except (EOFError, OSError, ValueError):
            # The worker died, possibly in the middle of a message: nothing after the last
            # complete message is trusted.  The sentinel reports the death itself.
            self._close_conn(worker)
            return False
        self._on_message(worker, message)
        return True

    def _drain(self, worker: process.WorkerProcess) -> None:
        """Read every message a dead worker left in its pipe."""
        while not worker.conn.closed:
            try:
                if not worker.conn.poll():
                    return
            except (EOFError, OSError, ValueError):
                self._close_conn(worker)
                return
            self._receive(worker)

    def _on_message(self, worker: process.WorkerProcess, message: messages.ToCoordinator) -> None:
        each = self._pools[worker.config.task_type]
        if isinstance(message, messages.Ready):
            worker.ready = True
            each.start_succeeded()
            if worker.state is State.STARTING:
                self._begin_head(worker, each)
        elif isinstance(message, messages.Done):
            self._on_done(worker, each, message)
        elif isinstance(message, messages.Progress):
            task = worker.task
            if task is not None and task.id == message.task_id:
                if message.message is not None:
                    log.info(
                        "task %s progress %.0f%%: %s",
                        task.id,
                        message.fraction * 100,
                        message.message,
                        extra={"task_id": task.id, "task_type": task.type, "node": self._node},
                    )
                new = transitions.report_progress(task, message.fraction, self._clock.now())
                worker.queue[0] = new
                self._batch.append(
                    writer.Change(
                        write=base.Update(
                            task=new, expected_status=task.status, expected_attempts=task.attempts
                        ),
                        task=new,
                        status_changed=False,
                    )
                )
        elif isinstance(message, messages.InitFailed):
            each.start_failed()
            log.error(
                "a worker for %r could not start: %s",
                worker.config.task_type,
                message.error.message,
                extra={"task_type": worker.config.task_type, "node": self._node},
            )
            if worker.queue:
                self._fail(worker.queue.popleft(), message.error)
            self._release_queued(worker)
            worker.state = State.STOPPING
        elif isinstance(message, messages.ShutdownFailed):
            log.error(
                "shutdown method of a %r worker (pid %s) raised %s: %s",
                worker.config.task_type,
                worker.pid,
                message.error.type,
                message.error.message,
                extra={"task_type": worker.config.task_type, "node": self._node},
            )

    def _on_done(
        self, worker: process.WorkerProcess, each: pool.WorkerPool, done: messages.Done
    ) -> None:
        task = worker.task
        if task is None or task.id != done.task_id:
            log.error(
                "worker %s reported an attempt it was not running; killing it",
                worker.pid,
                extra={
                    "task_id": done.task_id,
                    "task_type": worker.config.task_type,
                    "node": self._node,
                },
            )
            worker.kill(Reason.STOP)
            return
        worker.queue.popleft()
        worker.sent -= 1
        worker.sent_bytes -= _run_bytes(task)
        worker.read_past(worker.seq_of.pop(task.id, 0))
        each.record_run_time(done.run_seconds)
        worker.tasks_done += 1
        each.tasks_done += 1
        now = self._clock.now()
        if done.error is None:
            assert done.result_blob is not None
            new = transitions.succeed(task, done.result_blob, now)
        else:
            each.failures += 1
            new = transitions.fail_attempt(task, done.error, now)
        self._batch.append(writer.change_for(task, new))
        if worker.state is not State.BUSY:
            return
        if not worker.queue and self._should_recycle(worker, each):
            self._send_stop(worker)
        else:
            self._begin_head(worker, each)

    def _begin_head(self, worker: process.WorkerProcess, each: pool.WorkerPool) -> None:
        """The worker starts the first attempt of its queue now, or becomes idle."""
        if not self._send_queued(worker):
            return  # the pipe is broken: the unsent attempts went back, the exit is on its way
        head = worker.task
        if head is None:
            # An idle worker reads (and skips) whatever was taken back from its pipe at once.
            worker.taken_back.clear()
            worker.sent_bytes = 0
            worker.state = State.IDLE
            worker.idle_since = time.monotonic()
            worker.run_started_at = worker.deadline = worker.clock_deadline = None
            self._dirty = self._dirty or not self._planner.knows_all()
            if not each.is_current(worker) or worker.retire_after_task:
                self._send_stop(worker)
            return
        worker.state = State.BUSY
        worker.run_started_at = time.monotonic()
        timeout = each.spec.execution_timeout
        if timeout is None:
            worker.deadline = worker.clock_deadline = None
        else:
            worker.deadline = worker.run_started_at + timeout
            # An injected clock (FakeClock) moves timeouts as it moves retries: advancing it
            # past the deadline times the attempt out at once (real time still does too, so a
            # hung handler in a test is still killed).
            worker.clock_deadline = (
                None if self._real_time else self._clock.now() + timedelta(seconds=timeout)
            )
        if len(worker.queue) < each.prefetch_depth():
            # A prefetch slot is free: look for work, unless the planner already knows when
            # this type has some (it then plans without a store query).
            self._dirty = self._dirty or not self._planner.knows_all()
        if head.id in worker.terminate_on_start:
            worker.kill(Reason.TERMINATED)

    # -- balancing ------------------------------------------------------------------------

    def _balance(self) -> None:
        """Move attempts that have not started from the busiest worker to the least busy.

        Prefetching is sized from earlier run times, so a change of run time (short attempts,
        then long ones) can leave attempts queued behind a long one while another worker of
        the type has nothing to do.  A worker then takes half the difference from the worker
        with the most attempts waiting: those still held here move at once; those already in
        the busy worker's pipe are taken back through its revocation ledger (``ledger.py``),
        which needs nothing from the busy worker, however its handler holds the GIL.  An idle
        worker always takes; a busy one only when the difference is worth more than
        ``pool.PREFETCH_BUDGET`` of work at the type's mean run time, so a stream of short
        attempts does not churn.
        """
        for each in self._pools.values():
            thieves = [
                w
                for w in each.workers
                if w.state in (State.IDLE, State.BUSY)
                and each.is_current(w)
                and not w.retire_after_task
            ]
            for thief in sorted(thieves, key=lambda w: w.load()):
                donor = max(each.workers, key=lambda w: w.unstarted())
                take = min((donor.unstarted() - thief.load()) // 2, each.depth(thief))
                if take < 1:
                    break
                if thief.state is State.BUSY and take * (each.mean_run_time or 0.0) < (
                    pool.PREFETCH_BUDGET
                ):
                    continue
                self._take_from(donor, thief, take)

    def _take_from(
        self, donor: process.WorkerProcess, thief: process.WorkerProcess, take: int
    ) -> None:
        """Move ``take`` attempts that have not started from ``donor`` to ``thief``."""
        # Attempts not sent yet sit at the back of the queue (all of a starting worker's).
        unsent = len(donor.queue) - (donor.sent if donor.ready else 0)
        moved = [donor.queue.pop() for _ in range(min(take, unsent))]
        if len(moved) < take and donor.ready:
            moved += donor.take_back(take - len(moved), _run_bytes)
        for task in reversed(moved):
            self._move(task, donor, thief)

    def _move(
        self, task: models.BackgroundTask, donor: process.WorkerProcess, to: process.WorkerProcess
    ) -> None:
        """Hand an attempt that has not started (and left ``donor``'s books) to ``to``."""
        donor.assigned -= 1
        if task.id in donor.terminate_on_start:
            donor.terminate_on_start.discard(task.id)
            to.terminate_on_start.add(task.id)
        self._run_on(to, task)

    def _release_queued(self, worker: process.WorkerProcess) -> None:
        """Hand back the prefetched attempts of a worker that will not run them."""
        while worker.queue:
            self._release(worker.queue.popleft())
        worker.sent = 0
        worker.sent_bytes = 0
        worker.taken_back.clear()
        worker.seq_of.clear()

    def _should_recycle(self, worker: process.WorkerProcess, each: pool.WorkerPool) -> bool:
        spec = each.spec
        if (
            worker.retire_after_task
            or not each.is_current(worker)
            or self._stop_deadline is not None
        ):
            return True
        if spec.max_tasks_per_worker is not None and worker.tasks_done >= spec.max_tasks_per_worker:
            return True
        if spec.max_memory_per_worker is not None:
            try:
                rss = psutil.Process(worker.pid).memory_info().rss
            except psutil.Error:
                return True
            if rss > spec.max_memory_per_worker:
                log.info(
                    "recycling worker %s of %r: RSS %d > %d bytes",
                    worker.pid,
                    spec.task_type,
                    rss,
                    spec.max_memory_per_worker,
                    extra={"task_type": spec.task_type, "node": self._node},
                )
                return True
        return False

    # -- worker exits ---------------------------------------------------------------------

    def _on_exit(self, worker: process.WorkerProcess) -> None:
        self._drain(worker)
        self._close_conn(worker)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.sentinel)
        code = worker.reap()
        each = self._pools[worker.config.task_type]
        each.remove(worker)
        self._dirty = True
        if not worker.ready and worker.kill_reason in (None, Reason.START_TIMEOUT):
            each.start_failed()
        if worker.queue and worker.ready and worker.sent == 0:
            self._release_queued(worker)  # none of them reached the worker: nothing ran
        if worker.queue:
            task = worker.queue.popleft()
            each.crashes += 1
            error = outcomes.exit_error(
                pid=worker.pid,
                attempt=task.attempts,
                reason=worker.kill_reason,
                was_starting=not worker.ready,
                exitcode=code,
                spec=each.spec,
                start_timeout=START_TIMEOUT,
            )
            # A termination was asked for (cancel/remove); anything else is worth a warning.
            level = logging.INFO if worker.kill_reason is Reason.TERMINATED else logging.WARNING
            log.log(
                level,
                "attempt %d of task %s ended with its worker: %s",
                task.attempts,
                task.id,
                error.message,
                extra={"task_id": task.id, "task_type": task.type, "node": self._node},
            )
            self._fail(task, error)
            self._release_queued(worker)
        if each.draining and not each.workers:
            del self._pools[worker.config.task_type]

    def _fail(self, task: models.BackgroundTask, error: models.TaskError) -> None:
        now = self._clock.now()
        self._batch.append(writer.change_for(task, transitions.fail_attempt(task, error, now)))

    # -- timers ---------------------------------------------------------------------------

    def _check_timers(self) -> None:
        now = time.monotonic()
        for each in self._pools.values():
            if each.backoff_until and now >= each.backoff_until:
                each.backoff_until = 0.0
                self._dirty = True  # the pool may start workers again: look for its due work
        for worker in list(self._workers()):
            spec = self._pools[worker.config.task_type].spec
            if worker.kill_escalate_at is not None and now >= worker.kill_escalate_at:
                worker.escalate()
            elif worker.state is State.BUSY and self._timed_out(worker, now):
                log.warning(
                    "task %s exceeded execution_timeout=%ss; killing worker %s",
                    worker.task.id if worker.task else "?",
                    spec.execution_timeout,
                    worker.pid,
                    extra={
                        "task_id": worker.task.id if worker.task else None,
                        "task_type": spec.task_type,
                        "node": self._node,
                    },
                )
                worker.kill(Reason.TIMEOUT, grace=KILL_GRACE)
            elif worker.state is State.STARTING and now >= worker.started_at + START_TIMEOUT:
                worker.kill(Reason.START_TIMEOUT)
            elif (
                worker.state is State.IDLE
                and spec.idle_shutdown_timeout is not None
                and now >= worker.idle_since + spec.idle_shutdown_timeout
            ):
                self._send_stop(worker)

    def _timed_out(self, worker: process.WorkerProcess, now: float) -> bool:
        """Whether the attempt running on ``worker`` is past its execution deadline."""
        if worker.deadline is not None and now >= worker.deadline:
            return True
        return worker.clock_deadline is not None and self._clock.now() >= worker.clock_deadline

    def _send_stop(self, worker: process.WorkerProcess) -> None:
        worker.state = State.STOPPING
        deadline = time.monotonic() + SHUTDOWN_GRACE
        if self._stop_deadline is not None:
            deadline = min(deadline, max(self._stop_deadline, time.monotonic()) + 0.5)
        worker.kill_escalate_at = deadline
        if not worker.send(messages.Stop()):
            worker.kill(Reason.STOP)

    # -- dispatching ----------------------------------------------------------------------

    def _dispatch(self, *, start_workers: bool = True) -> None:
        """Claim attempts for free slots and store this turn's outcomes: one group commit.

        Without ``start_workers`` the plan keeps only slots of running workers; if it had
        more, the loop is left dirty so that its next turn plans (and starts) them.
        """
        if time.monotonic() < self._store_retry_at:
            return
        now = self._clock.now()
        plan, to_stop = self._planner.plan(now, refresh=self._dirty)
        self._dirty = False
        if not start_workers:
            self._dirty = any(None in slots for _, slots in plan)
            running: planner.Plan = [
                (name, [slot for slot in slots if slot is not None]) for name, slots in plan
            ]
            plan = [(name, kept) for name, kept in running if kept]
        for idle in to_stop:
            self._send_stop(idle)
        if not plan and not self._batch:
            if self._unsure:
                # No commit comes to check after the one that raised: check now.
                self._reconcile([], [])
            return
        batch, self._batch = self._batch, []
        try:
            applied, claimed = self._writer.commit(
                batch,
                [(task_type, len(slots)) for task_type, slots in plan],
                now,
                transitions.Claim(now, self._node),
            )
        except errors.StoreError:
            self._batch = batch + self._batch
            self._unsure = True
            self._store_failed(f"storing {len(batch)} outcome(s) and claiming due tasks")
            return
        self._store_ok()
        for (task_type, slots), tasks in zip(plan, claimed, strict=True):
            each = self._pools[task_type]
            for task, slot in zip(tasks, slots, strict=False):
                worker = slot if slot is not None else self._start_worker(each)
                if worker is None:
                    error = models.TaskError.of(
                        errors.WorkerInitError, "could not start a worker process"
                    )
                    self._fail(task, error)
                else:
                    self._run_on(worker, task)
        self._planner.settle(plan, claimed, now)
        if any(c.task is not None and c.task.status is Status.PENDING for c in batch):
            self._dirty = True  # a retry or a hand-back may be due sooner than the hint
        if self._unsure:
            self._reconcile(batch, applied)

    def _start_worker(self, each: pool.WorkerPool) -> process.WorkerProcess | None:
        try:
            worker = each.spawn()
        except Exception:
            each.start_failed()
            log.exception(
                "could not start a worker for %r",
                each.spec.task_type,
                extra={"task_type": each.spec.task_type, "node": self._node},
            )
            return None
        self._watch(worker)
        return worker

    def _run_on(self, worker: process.WorkerProcess, task: models.BackgroundTask) -> None:
        """Send a claimed attempt to a worker (held back until a starting worker is ready)."""
        worker.queue.append(task)
        worker.assigned += 1
        if worker.state is State.STARTING:
            return
        if len(worker.queue) == 1:
            self._begin_head(worker, self._pools[worker.config.task_type])
        else:
            self._send_queued(worker)

    def _send_queued(self, worker: process.WorkerProcess) -> bool:
        """Send the queued attempts that may go now; False if the pipe turned out broken.

        The first attempt goes whatever its size: the worker is free and reading.  Prefetched
        ones go only while the unread bytes stay within ``pool.PREFETCH_BYTES``, so that this
        write never blocks on a busy worker (which could be blocked writing its result to us).
        A worker can die while it still looks alive (its death not yet reported); attempts that
        never reached it did not run, so they are released uncounted rather than charged.  The
        sentinel then settles whatever was sent before.
        """
        while worker.sent < len(worker.queue):
            task = worker.queue[worker.sent]
            size = _run_bytes(task)
            if worker.sent and worker.sent_bytes + size > pool.PREFETCH_BYTES:
                return True
            seq = worker.last_seq + 1
            run = messages.Run(task.id, task.type, task.attempts, task.payload_blob, seq)
            if not worker.send(run):
                while len(worker.queue) > worker.sent:
                    self._release(worker.queue.pop())
                worker.state = State.KILLED  # takes no more attempts; its exit is on its way
                return False
            worker.last_seq = worker.seq_of[task.id] = seq
            worker.sent += 1
            worker.sent_bytes += size
        return True

    def _release(self, task: models.BackgroundTask) -> None:
        """Hand back a claimed attempt that never started (no attempt counted)."""
        self._batch.append(writer.change_for(task, transitions.release(task, self._clock.now())))

    # -- stopping -------------------------------------------------------------------------

    def _stop_step(self) -> None:
        assert self._stop_deadline is not None
        past = time.monotonic() >= self._stop_deadline
        for worker in list(self._workers()):
            if worker.state is State.IDLE:
                self._send_stop(worker)
            elif worker.state in (State.BUSY, State.STARTING) and (past or not worker.queue):
                # A worker still starting with nothing to run has no attempt to finish.
                worker.kill(Reason.STOP)

    # -- store writes ---------------------------------------------------------------------

    def _flush(self) -> None:
        """Store held outcomes without claiming (while stopping)."""
        if not self._batch or time.monotonic() < self._store_retry_at:
            return
        batch, self._batch = self._batch, []
        try:
            applied = self._writer.apply(batch)
        except errors.StoreError:
            self._batch = batch + self._batch
            self._unsure = True
            self._store_failed(f"storing {len(batch)} outcome(s)")
            return
        self._store_ok()
        if self._unsure:
            self._reconcile(batch, applied)

    def _reconcile(self, batch: list[writer.Change], applied: list[bool]) -> None:
        """After a commit that raised, find what it stored all the same (FAULTS 30).

        Its outcomes, written again, fail their fence: those the store holds are announced.
        Its claims reached no worker: tasks this node holds in processing that no worker runs
        are handed back uncounted.  A store error here leaves the check for the next commit.
        """
        try:
            landed = [
                change
                for change, ok in zip(batch, applied, strict=True)
                if not ok and change.task is not None and self._landed(change.task)
            ]
            held = {task.id for worker in self._workers() for task in worker.queue}
            held.update(change.task.id for change in self._batch if change.task is not None)
            stranded = [
                task
                for task in self._store.processing()
                if task.node_identity == self._node and task.id not in held
            ]
        except errors.StoreError:
            return
        self._unsure = False
        self._writer.announce(landed)
        for task in stranded:
            log.warning("task %s was claimed by a commit that reported an error; released", task.id)
            self._release(task)
            self._dirty = True

    def _landed(self, task: models.BackgroundTask) -> bool:
        stored = self._store.get(task.id)
        deleted = task.status.is_final and task.retain_for == 0  # see writer.change_for
        return stored is None if deleted else stored == task

    def _nothing_held(self) -> bool:
        """While stopping: whether no outcome is held back by a store error any more.

        At the stop deadline it gives up: the outcomes still held are logged, and their tasks
        keep their last stored state (a durable store's next start counts them as crashed).
        """
        assert self._stop_deadline is not None
        if not self._batch:
            return True
        if time.monotonic() < self._stop_deadline:
            return False
        held = sorted(
            {w.task.id if isinstance(w, base.Update) else w.task_id for w in self._writes()}
        )
        log.error(
            "stopping with the outcomes of %d task(s) the task store did not take: %s",
            len(held),
            ", ".join(held),
        )
        return True

    def _writes(self) -> list[base.Write]:
        return [change.write for change in self._batch]

    def _store_ok(self) -> None:
        if self._store_backoff:
            log.warning(
                "the task store is writable again; held outcomes are stored",
                extra={"node": self._node},
            )
        self._store_backoff = 0.0
        self._store_retry_at = 0.0

    def _store_failed(self, what: str) -> None:
        if not self._store_backoff:
            log.error(
                "task store failed while %s; retrying with backoff",
                what,
                exc_info=True,
                extra={"node": self._node},
            )
        self._store_backoff = min(STORE_RETRY_MAX, max(STORE_RETRY_FIRST, self._store_backoff * 2))
        self._store_retry_at = time.monotonic() + self._store_backoff
