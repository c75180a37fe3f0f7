"""One task type's pool of worker processes: its limits, its workers, its start-up backoff.

The pool only keeps books and answers questions ("how many can I start?", "which worker is
idle?"); the supervisor (``supervisor.py``) acts on the answers.  Every worker lifetime
decision (idle shutdown, recycling, backoff after a failed start) is the coordinator's, never
the worker's.
"""

from __future__ import annotations

import os
import sys
import time
from multiprocessing.context import BaseContext
from typing import Final

import attrs

from taskengine.core import handlers
from taskengine.pool import process, worker_main

__all__ = ["PoolFacts", "WorkerPool"]

#: First and largest pause before starting a worker again after a failed start.
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 30.0
#: Short attempts are prefetched: more attempts wait in the worker's pipe, so that the worker
#: never idles through a round trip to the coordinator (or a group commit).  The depth is sized
#: so that the prefetched attempts add up to about this many seconds of work: a queued attempt
#: never waits long behind others while another worker is free.  Attempts longer than this are
#: not prefetched at all; for them the round trip is negligible anyway.
PREFETCH_BUDGET: Final = 0.002
#: Attempts sent to one worker at most (running + prefetched).  Deeper queues let one group
#: commit carry more outcomes: 16 -> 64 measured +15-20 % no-op throughput on SqliteStore and
#: 64 -> 128 another +12 % (benchmarks/overhead.py, same runs), with nothing lost on MemoryStore.
#: Only attempts under 16 us reach this depth (PREFETCH_BUDGET), and PREFETCH_BYTES keeps the
#: pipe from filling whatever the depth (at 128 the two limits meet for small payloads).
PREFETCH_MAX: Final = 128
#: Bytes of attempts that may wait unread in a worker's pipe.  A busy worker reads nothing
#: until it has written its result; if the coordinator blocked writing prefetched attempts into
#: a full pipe meanwhile, and the result were larger than the pipe, each side would wait for the
#: other forever.  Prefetched attempts are sent only while the pipe holds less than this, counted
#: with RUN_OVERHEAD_BYTES per message: Linux charges a Unix socket about 700 bytes of
#: bookkeeping per small write on top of its bytes, so 128 tiny attempts take about 98 KiB of the
#: usual 208 KiB send buffer; ``tests/faults/test_prefetch_pipe.py`` checks that twice the most
#: this allows fits without blocking, so the coordinator's writes to a busy worker never block.
#: An attempt that does not fit waits in the coordinator until the worker is free; the first
#: attempt sent to a free worker may be of any size, because the worker is reading.
PREFETCH_BYTES: Final = 32 * 1024
#: What a Run message adds to its payload, counted against ``PREFETCH_BYTES``.
RUN_OVERHEAD_BYTES: Final = 256
_EWMA_WEIGHT: Final = 0.2

State = process.WorkerState


@attrs.frozen(kw_only=True)
class PoolFacts:
    """One pool at one moment, for statistics and tests.

    Attributes:
        pids: the process ids of its workers (starting, running, stopping).
        alive: workers not yet killed.
        busy: workers running an attempt.
        tasks_done: attempts that reported an outcome since the pool was created.
        failures: of those, attempts whose handler raised.
        crashes: attempts that ended with their worker (crash, kill, timeout).
        run_seconds_total: the summed run time of the attempts that reported an outcome.
        max_worker_count: the registration's limit.
    """

    pids: tuple[int, ...]
    alive: int
    busy: int
    tasks_done: int
    failures: int
    crashes: int
    run_seconds_total: float
    max_worker_count: int


class WorkerPool:
    """The workers of one task type and the registration they run."""

    def __init__(self, spec: handlers.HandlerSpec, mp_context: BaseContext) -> None:
        self.spec = spec
        self.generation = 0
        self.workers: list[process.WorkerProcess] = []
        self.draining = False
        self._mp_context = mp_context
        self._backoff = 0.0
        self.backoff_until = 0.0
        self.tasks_done = 0
        self.failures = 0
        self.crashes = 0
        self.mean_run_time: float | None = None
        #: Sum of the run times of every finished attempt (for the exact mean in stats).
        self.run_seconds_total = 0.0

    def replace_spec(self, spec: handlers.HandlerSpec) -> None:
        """Switch to a new registration; workers of the old one retire after their attempt."""
        self.spec = spec
        self.generation += 1
        self.draining = False
        self._backoff = 0.0
        self.backoff_until = 0.0

    def worker_config(self) -> worker_main.WorkerConfig:
        """What a new worker of this pool is started with."""
        return worker_main.WorkerConfig(
            task_type=self.spec.task_type,
            module=self.spec.module,
            method=self.spec.method,
            initialise_method=self.spec.initialise_method,
            shutdown_method=self.spec.shutdown_method,
            sys_path=tuple(sys.path),
            environ=tuple(os.environ.items()),
        )

    def is_current(self, worker: process.WorkerProcess) -> bool:
        """Whether ``worker`` runs the current registration."""
        return worker.generation == self.generation and not self.draining

    def idle_workers(self) -> list[process.WorkerProcess]:
        """Idle workers of the current registration."""
        return [w for w in self.workers if w.state is State.IDLE and self.is_current(w)]

    def facts(self) -> PoolFacts:
        """What this pool looks like now."""
        return PoolFacts(
            pids=tuple(w.pid for w in self.workers),
            alive=sum(1 for w in self.workers if w.state is not State.KILLED),
            busy=sum(1 for w in self.workers if w.state is State.BUSY),
            tasks_done=self.tasks_done,
            failures=self.failures,
            crashes=self.crashes,
            run_seconds_total=self.run_seconds_total,
            max_worker_count=self.spec.max_worker_count,
        )

    def record_outcome(self, seconds: float, *, failed: bool) -> None:
        """Count one attempt that reported its end after running ``seconds``."""
        self.tasks_done += 1
        self.failures += failed
        self.record_run_time(seconds)

    def record_run_time(self, seconds: float) -> None:
        """Fold one attempt's run time (as the worker measured it) into the moving mean."""
        self.run_seconds_total += seconds
        if self.mean_run_time is None:
            self.mean_run_time = seconds
        else:
            self.mean_run_time += _EWMA_WEIGHT * (seconds - self.mean_run_time)

    def prefetch_depth(self) -> int:
        """Attempts one worker may hold, from the mean run time of this pool's attempts."""
        mean = self.mean_run_time
        if mean is None or mean >= PREFETCH_BUDGET:
            return 1
        return max(2, min(PREFETCH_MAX, int(PREFETCH_BUDGET / max(mean, 1e-6))))

    def depth(self, worker: process.WorkerProcess) -> int:
        """How many attempts ``worker`` may hold now (0 when it must take no more)."""
        spec = self.spec
        if (
            worker.state not in (State.IDLE, State.BUSY, State.STARTING)
            or worker.retire_after_task
            or not self.is_current(worker)
        ):
            return 0
        limit = self.prefetch_depth()
        # A starting worker may hold its share too: nothing is sent to it before it is ready,
        # so an idle worker takes those attempts back for free (``balance.py``).
        if spec.max_memory_per_worker is not None or spec.execution_timeout is not None:
            limit = 1
        if spec.max_tasks_per_worker is not None:
            limit = min(limit, spec.max_tasks_per_worker - worker.assigned)
        return max(0, limit - len(worker.queue))

    def spawnable(self, total_live: int, max_total: int) -> int:
        """How many workers may be started now within both limits and the backoff."""
        if self.draining or time.monotonic() < self.backoff_until:
            return 0
        own = self.spec.max_worker_count - len(self.workers)
        return max(0, min(own, max_total - total_live))

    def spawn(self) -> process.WorkerProcess:
        """Start a worker (attempts are sent to it once it reports ready)."""
        worker = process.WorkerProcess(self._mp_context, self.worker_config(), self.generation)
        self.workers.append(worker)
        return worker

    def start_failed(self) -> None:
        """A worker could not start: wait longer before the next try (capped)."""
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
        self.backoff_until = time.monotonic() + self._backoff

    def start_succeeded(self) -> None:
        """A worker started: the next failure starts the backoff from the beginning."""
        self._backoff = 0.0

    def remove(self, worker: process.WorkerProcess) -> None:
        """Forget an exited worker."""
        if worker in self.workers:
            self.workers.remove(worker)
