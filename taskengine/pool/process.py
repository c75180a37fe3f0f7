"""One worker process as the coordinator sees it: process, pipes, state and the attempt it runs.

The handle never blocks: it starts the process, sends messages, and kills the process group.
Deciding *when* to do any of that belongs to ``pool.py`` and ``supervisor.py``.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from taskengine.core import models
from taskengine.pool import ledger, messages, worker_main

__all__ = ["LEDGER_TIMEOUT", "KillReason", "WorkerProcess", "WorkerState"]

#: Descriptors of the coordinator's ends of live workers' pipes, which a worker started with the
#: fork method closes first (only the reactor thread starts and reaps workers).
_coordinator_ends: set[int] = set()
#: Longest wait for a worker's ledger lock (the worker holds it for a few microseconds; one
#: stopped by a signal while holding it would hold it until it runs again).
LEDGER_TIMEOUT = 0.05


class WorkerState(enum.Enum):
    """Life of a worker process."""

    STARTING = "starting"  # spawned, waiting for Ready
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"  # sent Stop, waiting for it to exit
    KILLED = "killed"  # signalled, waiting for the sentinel


class KillReason(enum.Enum):
    """Why the coordinator killed a worker; decides the error of its attempt."""

    TIMEOUT = "timeout"
    TERMINATED = "terminated"  # cancel(terminate=True) or remove()
    START_TIMEOUT = "start-timeout"
    STOP = "stop"  # stop() ran out of time, or the worker ignored Stop


class WorkerProcess:
    """Handle of one worker process of a pool."""

    def __init__(
        self, mp_context: BaseContext, config: worker_main.WorkerConfig, generation: int
    ) -> None:
        self.config = config
        self.generation = generation
        parent_conn, child_conn = mp_context.Pipe(duplex=True)
        lifeline_reader, lifeline_writer = mp_context.Pipe(duplex=False)
        self.conn: Connection = parent_conn
        self.conn_fd: int = parent_conn.fileno()
        self._lifeline: Connection = lifeline_writer
        self.ledger = ledger.RevocationLedger()
        # A forked child gets copies of every descriptor of the coordinator: it must close the
        # coordinator's ends of its own and the other workers' pipes, or it would never see
        # EOF when the coordinator dies (spawn and forkserver children inherit none of them).
        forked = mp_context.get_start_method() == "fork"
        inherited = (
            (parent_conn.fileno(), lifeline_writer.fileno(), *_coordinator_ends) if forked else ()
        )
        self.process: Any = mp_context.Process(  # type: ignore[attr-defined]
            target=worker_main.run_worker,
            args=(child_conn, lifeline_reader, config, self.ledger, inherited),
            name=f"taskengine-worker[{config.task_type}]",
            daemon=False,
        )
        self.process.start()
        # The child has its own copies now; closing ours makes EOF mean "the other side died".
        child_conn.close()
        lifeline_reader.close()
        self._ends = (parent_conn.fileno(), lifeline_writer.fileno())
        _coordinator_ends.update(self._ends)
        self.pid: int = self.process.pid
        self.sentinel: int = self.process.sentinel
        self.state = WorkerState.STARTING
        self.ready = False  # set when the worker reports Ready
        self.started_at = time.monotonic()
        # Attempts sent to this worker, in order: the first is running (or about to, while the
        # worker starts); the rest are prefetched and have not started.
        self.queue: collections.deque[models.BackgroundTask] = collections.deque()
        # How many attempts at the front of ``queue`` were sent; the rest wait here until the
        # bytes in the pipe allow them (``Supervisor._send_queued``).
        self.sent = 0
        # Bytes of those sent attempts (``_run_bytes``), kept as they change: not summed per send.
        self.sent_bytes = 0
        self.assigned = 0
        # The number (``Run.seq``) each sent attempt got, by task id; the last number given.
        self.seq_of: dict[str, int] = {}
        self.last_seq = 0
        # Attempts taken back while in the pipe (number, bytes): the worker reads and skips
        # them, so their bytes count against the pipe until it has read past them.
        self.taken_back: collections.deque[tuple[int, int]] = collections.deque()
        self.terminate_on_start: set[str] = set()
        self.run_started_at: float | None = None
        self.deadline: float | None = None
        # The execution deadline on the engine's clock, when that clock is injected (FakeClock).
        self.clock_deadline: datetime | None = None
        self.idle_since = self.started_at
        self.tasks_done = 0
        self.kill_reason: KillReason | None = None
        self.kill_escalate_at: float | None = None
        self.retire_after_task = False

    def __repr__(self) -> str:
        return f"<WorkerProcess pid={self.pid} {self.config.task_type} {self.state.value}>"

    @property
    def task(self) -> models.BackgroundTask | None:
        """The attempt running here (or about to run while the worker starts), if any."""
        return self.queue[0] if self.queue else None

    def unstarted(self) -> int:
        """How many of the attempts held here have not started (the head of a busy one has)."""
        if self.state is WorkerState.BUSY:
            return max(0, len(self.queue) - 1)
        if self.state is WorkerState.STARTING:
            return len(self.queue)
        return 0

    def load(self) -> int:
        """Attempts waiting for this worker, less one if idle.

        Idle counts as one less than busy with nothing queued: it could start one at once.
        """
        return self.unstarted() - (self.state is not WorkerState.BUSY)

    def take_back(
        self, most: int, size: Callable[[models.BackgroundTask], int]
    ) -> list[models.BackgroundTask]:
        """Take up to ``most`` sent attempts that have not started back from the pipe.

        Newest first; the worker skips them.  They leave the queue here, and their bytes
        (``size``) stay counted in ``taken_back`` until the worker has read past them.
        """
        sent = list(self.queue)[1 : self.sent]  # the head is running (or about to)
        by_seq = {self.seq_of[task.id]: task for task in sent}
        taken = self.ledger.take_back(sorted(by_seq, reverse=True), most, LEDGER_TIMEOUT)
        tasks = [by_seq[seq] for seq in taken]
        for seq, task in zip(taken, tasks, strict=True):
            self.queue.remove(task)
            self.sent -= 1
            del self.seq_of[task.id]
            self.taken_back.append((seq, size(task)))
        return tasks

    def read_past(self, seq: int) -> None:
        """The worker reported attempt ``seq``: it has read every attempt numbered before it."""
        while self.taken_back and self.taken_back[0][0] < seq:
            self.sent_bytes -= self.taken_back.popleft()[1]

    def send_run(self, task: models.BackgroundTask, size: int) -> bool:
        """Send the next queued attempt, numbered for the ledger; False if the pipe is broken.

        ``size`` is what it counts against the bytes unread in the pipe.
        """
        seq = self.last_seq + 1
        if not self.send(messages.Run(task.id, task.type, task.attempts, task.payload_blob, seq)):
            return False
        self.last_seq = self.seq_of[task.id] = seq
        self.sent += 1
        self.sent_bytes += size
        return True

    def finish_head(self, size: int) -> None:
        """The running attempt reported its end (``size``: what it counted in the pipe)."""
        task = self.queue.popleft()
        self.sent -= 1
        self.sent_bytes -= size
        self.read_past(self.seq_of.pop(task.id, 0))
        self.tasks_done += 1

    def begin(
        self, started: float, deadline: float | None, clock_deadline: datetime | None
    ) -> None:
        """The head of the queue starts now (``deadline``: monotonic, or on the engine's clock)."""
        self.state = WorkerState.BUSY
        self.run_started_at = started
        self.deadline = deadline
        self.clock_deadline = clock_deadline

    def become_idle(self, now: float) -> None:
        """Nothing is queued: the worker waits for work from ``now`` (monotonic)."""
        # An idle worker reads (and skips) whatever was taken back from its pipe at once.
        self.taken_back.clear()
        self.sent_bytes = 0
        self.state = WorkerState.IDLE
        self.idle_since = now
        self.run_started_at = self.deadline = self.clock_deadline = None

    def hand_over(self, task: models.BackgroundTask, to: WorkerProcess) -> None:
        """``task`` (not started, already out of the queue) moves to ``to``'s books."""
        self.assigned -= 1
        if task.id in self.terminate_on_start:
            self.terminate_on_start.discard(task.id)
            to.terminate_on_start.add(task.id)

    def drop_queue(self) -> list[models.BackgroundTask]:
        """Empty the queue of attempts this worker will not run, and return them."""
        dropped = list(self.queue)
        self.queue.clear()
        self.sent = 0
        self.sent_bytes = 0
        self.taken_back.clear()
        self.seq_of.clear()
        return dropped

    def holds(self, task_id: str) -> bool:
        """Whether ``task_id`` is running or prefetched here."""
        return any(task.id == task_id for task in self.queue)

    def send(self, message: messages.ToWorker) -> bool:
        """Send a message; False when the pipe is broken (the worker is dying)."""
        try:
            messages.send(self.conn, message)
        except (OSError, ValueError):
            return False
        return True

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the worker's process group (its handler's children too)."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            # Not yet a group leader (setsid not run yet), or already gone.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self, reason: KillReason, *, grace: float = 0.0) -> None:
        """SIGTERM now and SIGKILL after ``grace`` seconds, or SIGKILL at once."""
        if self.kill_reason is None:
            self.kill_reason = reason
        self.state = WorkerState.KILLED
        if grace > 0:
            self.signal_group(signal.SIGTERM)
            self.kill_escalate_at = time.monotonic() + grace
        else:
            self.signal_group(signal.SIGKILL)
            self.kill_escalate_at = None

    def escalate(self) -> None:
        """SIGKILL the process group (the grace after SIGTERM ran out)."""
        self.signal_group(signal.SIGKILL)
        self.kill_escalate_at = None

    def reap(self) -> int | None:
        """Collect the exited process; return its exit code and close the pipes."""
        # The group may still hold the handler's children: they die with their worker.  This
        # runs before the join, while the exited worker is a zombie whose pid cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.join(1.0)
        _coordinator_ends.difference_update(self._ends)
        for conn in (self.conn, self._lifeline):
            with contextlib.suppress(OSError):
                conn.close()
        self.ledger.close()
        code: int | None = self.process.exitcode
        with contextlib.suppress(ValueError):
            self.process.close()
        return code
