"""The supervisor: every worker process of one engine, their pipes, their exits and their timers.

It runs on the coordinator's loop thread and never blocks.  The coordinator hands it claimed
attempts (:meth:`Supervisor.run_on`); it sends them to workers, prefetching within each worker's
share and taking back attempts that wait behind a busy worker when another is free
(``balance.py``), reads what workers send, notices deaths and deadlines, and reports how each
attempt ended as a plain value in :attr:`Supervisor.outcomes` (``outcomes.py``).  It knows
nothing of stores, transitions or the task table: whether an outcome is stored, retried or
announced is the coordinator's business.

Size: one class over the worker handles, because every step here (a message, an exit, a timer,
a send) reads and changes the same per-worker books (queue, sent bytes, ledger numbers) and
must leave them consistent before the next step; spreading it over modules would spread those
invariants too.  Balancing, the pure choice of which attempts move, is in ``balance.py``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import selectors
import time
from collections.abc import Iterable
from datetime import timedelta
from multiprocessing.context import BaseContext
from typing import Final

import psutil

from taskengine.core import clock, handlers, models
from taskengine.pool import balance, messages, outcomes, pool, process

__all__ = ["KILL_GRACE", "START_TIMEOUT", "Supervisor"]

log = logging.getLogger(__name__)

State = process.WorkerState
Reason = process.KillReason

#: Seconds between SIGTERM and SIGKILL when an attempt times out.
KILL_GRACE: Final = 1.0
#: Seconds a worker may take to import its handler and initialise.
START_TIMEOUT: Final = 60.0
#: Seconds a worker may spend in its shutdown method before it is killed.
SHUTDOWN_GRACE: Final = 5.0


def run_bytes(task: models.BackgroundTask) -> int:
    """About how many bytes the Run message of ``task`` puts in a worker's pipe."""
    return len(task.payload_blob) + pool.RUN_OVERHEAD_BYTES


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data (or EOF) right now, without blocking."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


class Supervisor:
    """Starts, feeds and watches the worker processes of every registered task type."""

    def __init__(self, *, clock_: clock.Clock, node_identity: str, mp_context: BaseContext) -> None:
        self.pools: dict[str, pool.WorkerPool] = {}
        #: How attempts ended since the coordinator last took them, in order.
        self.outcomes: list[outcomes.Outcome] = []
        #: Something changed that may let more work run (a worker exited, a backoff ended).
        self.changed = False
        #: A worker has room for another attempt (it became idle or started its next one).
        self.slot_freed = False
        #: While stopping: the monotonic time by which every worker must be gone.
        self.stop_deadline: float | None = None
        self._clock = clock_
        # Deadlines follow time.monotonic; under an injected clock, that clock's too.
        self._real_time = isinstance(clock_, clock.SystemClock)
        self._node = node_identity
        self._mp_context = mp_context
        # One long-lived epoll set: building a new selector per turn (as
        # multiprocessing.connection.wait does) costs more than the turn's real work.
        self._selector = selectors.DefaultSelector()

    # -- the coordinator's questions ----------------------------------------------------

    def workers(self) -> Iterable[process.WorkerProcess]:
        """Every worker of every pool."""
        for each in self.pools.values():
            yield from each.workers

    def held_ids(self) -> set[str]:
        """Ids of the attempts the workers run or hold queued."""
        return {task.id for worker in self.workers() for task in worker.queue}

    def has_idle_worker(self, task_type: str) -> bool:
        """Whether a worker of ``task_type``'s current registration is idle."""
        each = self.pools.get(task_type)
        return each is not None and bool(each.idle_workers())

    def facts(self) -> dict[str, pool.PoolFacts]:
        """What each pool looks like now (for stats and tests)."""
        return {task_type: each.facts() for task_type, each in self.pools.items()}

    def next_timer(self, now: float) -> float | None:
        """The earliest worker or pool timer (monotonic), if any."""
        moments = [m for worker in self.workers() for m in self._timers_of(worker) if m is not None]
        moments += [each.backoff_until for each in self.pools.values() if each.backoff_until > now]
        return min(moments, default=None)

    def _timers_of(self, worker: process.WorkerProcess) -> tuple[float | None, ...]:
        spec = self.pools[worker.config.task_type].spec
        idle_at = None
        if worker.state is State.IDLE and spec.idle_shutdown_timeout is not None:
            idle_at = worker.idle_since + spec.idle_shutdown_timeout
        start_at = worker.started_at + START_TIMEOUT if worker.state is State.STARTING else None
        return (worker.deadline, worker.kill_escalate_at, idle_at, start_at)

    # -- registrations --------------------------------------------------------------------

    def register(self, spec: handlers.HandlerSpec) -> None:
        """Create or replace the pool of ``spec.task_type``."""
        existing = self.pools.get(spec.task_type)
        if existing is None:
            self.pools[spec.task_type] = pool.WorkerPool(spec, self._mp_context)
        else:
            existing.replace_spec(spec)
            self._retire_outdated(existing)
        self.changed = True

    def unregister(self, task_type: str) -> None:
        """Shut a pool down gracefully."""
        found = self.pools.get(task_type)
        if found is not None:
            found.draining = True
            self._retire_outdated(found)
            if not found.workers:
                del self.pools[task_type]

    def _retire_outdated(self, each: pool.WorkerPool) -> None:
        for worker in list(each.workers):
            if each.is_current(worker):
                continue
            if worker.state is State.IDLE:
                self.send_stop(worker)
            elif worker.state in (State.BUSY, State.STARTING):
                worker.retire_after_task = True

    def terminate(self, task_id: str) -> bool:
        """Kill the worker running ``task_id``; False if no worker holds it.

        A prefetched attempt has not started: its worker is killed when it would start, so the
        attempt running before it finishes normally.
        """
        for worker in self.workers():
            if not worker.holds(task_id):
                continue
            head = worker.task
            if head is not None and head.id == task_id and worker.state is not State.STARTING:
                worker.kill(Reason.TERMINATED)
            else:
                worker.terminate_on_start.add(task_id)
            return True
        return False

    def replace_task(self, task: models.BackgroundTask) -> None:
        """Keep ``task`` (a newer record of a running attempt) in place of the one held."""
        for worker in self.workers():
            if worker.task is not None and worker.task.id == task.id:
                worker.queue[0] = task
                return

    # -- waiting --------------------------------------------------------------------------

    def watch_wakeups(self, fd: int) -> None:
        """Also wake :meth:`wait` when ``fd`` is readable (the coordinator's wake-up pipe)."""
        self._selector.register(fd, selectors.EVENT_READ, None)

    def wait(self, timeout: float) -> bool:
        """Sleep until a worker speaks or exits, ``timeout`` passes, or a wake-up arrives.

        Reads every message already in the pipes and handles every exit; True when the
        wake-up descriptor was readable (the caller reads it).
        """
        events = self._selector.select(timeout)
        woken = False
        exited: list[process.WorkerProcess] = []
        for key, _ in events:
            if key.data is None:
                woken = True
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
        return woken

    def close(self) -> None:
        """Forget every descriptor (after the loop ended)."""
        self._selector.close()

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
        each = self.pools[worker.config.task_type]
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
                self.outcomes.append(outcomes.Progressed(task, message.fraction, message.message))
        elif isinstance(message, messages.InitFailed):
            each.start_failed()
            log.error(
                "a worker for %r could not start: %s",
                worker.config.task_type,
                message.error.message,
                extra={"task_type": worker.config.task_type, "node": self._node},
            )
            if worker.queue:
                self.outcomes.append(outcomes.Failed(worker.queue.popleft(), message.error))
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
        worker.finish_head(run_bytes(task))
        each.record_outcome(done.run_seconds, failed=done.error is not None)
        self.outcomes.append(outcomes.Finished(task, done.result_blob, done.error))
        if worker.state is not State.BUSY:
            return
        if not worker.queue and self._should_recycle(worker, each):
            self.send_stop(worker)
        else:
            self._begin_head(worker, each)

    def _begin_head(self, worker: process.WorkerProcess, each: pool.WorkerPool) -> None:
        """The worker starts the first attempt of its queue now, or becomes idle."""
        if not self._send_queued(worker):
            return  # the pipe is broken: the unsent attempts went back, the exit is on its way
        head = worker.task
        if head is None:
            worker.become_idle(time.monotonic())
            self.slot_freed = True
            if not each.is_current(worker) or worker.retire_after_task:
                self.send_stop(worker)
            return
        timeout = each.spec.execution_timeout
        started = time.monotonic()
        # An injected clock (FakeClock) moves timeouts as it moves retries: advancing it past
        # the deadline times the attempt out at once (real time still does too, so a hung
        # handler in a test is still killed).
        on_clock = None
        if timeout is not None and not self._real_time:
            on_clock = self._clock.now() + timedelta(seconds=timeout)
        worker.begin(started, None if timeout is None else started + timeout, on_clock)
        if len(worker.queue) < each.prefetch_depth():
            self.slot_freed = True  # a prefetch slot is free: the coordinator may look for work
        if head.id in worker.terminate_on_start:
            worker.kill(Reason.TERMINATED)

    def _should_recycle(self, worker: process.WorkerProcess, each: pool.WorkerPool) -> bool:
        spec = each.spec
        if (
            worker.retire_after_task
            or not each.is_current(worker)
            or self.stop_deadline is not None
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

    # -- feeding --------------------------------------------------------------------------

    def start_worker(self, each: pool.WorkerPool) -> process.WorkerProcess | None:
        """Start a worker of ``each``; None (logged, backoff) if it could not be started."""
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

    def run_on(self, worker: process.WorkerProcess, task: models.BackgroundTask) -> None:
        """Give a claimed attempt to a worker (held back until a starting worker is ready)."""
        worker.queue.append(task)
        worker.assigned += 1
        if worker.state is State.STARTING:
            return
        if len(worker.queue) == 1:
            self._begin_head(worker, self.pools[worker.config.task_type])
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
            size = run_bytes(task)
            if worker.sent and worker.sent_bytes + size > pool.PREFETCH_BYTES:
                return True
            if not worker.send_run(task, size):
                while len(worker.queue) > worker.sent:
                    self.outcomes.append(outcomes.Unstarted(worker.queue.pop()))
                worker.state = State.KILLED  # takes no more attempts; its exit is on its way
                return False
        return True

    def balance(self) -> None:
        """Move attempts that wait behind a busy worker to one with room (``balance.py``)."""
        for each in self.pools.values():
            for donor, thief, take in balance.moves(each):
                # Attempts not sent yet sit at the back of the queue (all of a starting one's).
                unsent = len(donor.queue) - (donor.sent if donor.ready else 0)
                moved = [donor.queue.pop() for _ in range(min(take, unsent))]
                if len(moved) < take and donor.ready:
                    moved += donor.take_back(take - len(moved), run_bytes)
                for task in reversed(moved):
                    donor.hand_over(task, thief)
                    self.run_on(thief, task)

    def _release_queued(self, worker: process.WorkerProcess) -> None:
        """Hand back the prefetched attempts of a worker that will not run them."""
        self.outcomes.extend(outcomes.Unstarted(task) for task in worker.drop_queue())

    # -- exits and timers -----------------------------------------------------------------

    def _on_exit(self, worker: process.WorkerProcess) -> None:
        self._drain(worker)
        self._close_conn(worker)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.sentinel)
        code = worker.reap()
        each = self.pools[worker.config.task_type]
        each.remove(worker)
        self.changed = True
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
            self.outcomes.append(outcomes.Failed(task, error))
            self._release_queued(worker)
        if each.draining and not each.workers:
            del self.pools[worker.config.task_type]

    def check_timers(self) -> None:
        """Act on every timer that is due: kills, escalations, idle shutdowns, backoff ends."""
        now = time.monotonic()
        for each in self.pools.values():
            if each.backoff_until and now >= each.backoff_until:
                each.backoff_until = 0.0
                self.changed = True  # the pool may start workers again
        for worker in list(self.workers()):
            spec = self.pools[worker.config.task_type].spec
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
                self.send_stop(worker)

    def _timed_out(self, worker: process.WorkerProcess, now: float) -> bool:
        """Whether the attempt running on ``worker`` is past its execution deadline."""
        if worker.deadline is not None and now >= worker.deadline:
            return True
        return worker.clock_deadline is not None and self._clock.now() >= worker.clock_deadline

    def send_stop(self, worker: process.WorkerProcess) -> None:
        """Ask a worker to run its shutdown method and exit (killed if it takes too long)."""
        deadline = time.monotonic() + SHUTDOWN_GRACE
        if self.stop_deadline is not None:
            deadline = min(deadline, max(self.stop_deadline, time.monotonic()) + 0.5)
        worker.state = State.STOPPING
        worker.kill_escalate_at = deadline
        if not worker.send(messages.Stop()):
            worker.kill(Reason.STOP)

    def stop_step(self) -> None:
        """While stopping: stop idle workers, and kill busy ones past the stop deadline."""
        assert self.stop_deadline is not None
        past = time.monotonic() >= self.stop_deadline
        for worker in list(self.workers()):
            if worker.state is State.IDLE:
                self.send_stop(worker)
            elif worker.state in (State.BUSY, State.STARTING) and (past or not worker.queue):
                # A worker still starting with nothing to run has no attempt to finish.
                worker.kill(Reason.STOP)

    def kill_all(self) -> None:
        """SIGKILL every worker (the loop crashed)."""
        for worker in self.workers():
            worker.kill(Reason.STOP)
