"""Inline execution (``TaskEngine(..., execution="inline")``): handlers run in the caller.

Nothing runs until the test calls ``engine.run_next()`` or ``engine.run_until_idle()``: there is
no reactor thread and there are no worker processes.  What an attempt *means* is not
re-implemented here.  Claims go through the store's group commit with ``transitions.claim``,
the handler runs through the worker's own :func:`worker_main.run_attempt` (so its exception
becomes the same ``TaskError``), outcomes are ``transitions.succeed`` / ``fail_attempt`` written
by the same fenced ``TaskWriter``, and callbacks leave through the same publisher.  Only the
*process* is simulated:

* one "inline worker" per task type holds the imported handler; its initialise method runs when
  it first runs an attempt, its shutdown method when it is retired (stop, unregister,
  re-register, ``max_tasks_per_worker``);
* ``execution_timeout`` is judged on the engine's clock: the handler is never interrupted, but
  when it returns after the clock moved more than the timeout since the attempt started (a
  ``FakeClock`` advanced inside the handler, or real time with the system clock), its outcome is
  discarded and the attempt fails with ``TaskTimeoutError``, as if its worker had been killed;
* ``taskengine.testing.crash_worker()`` raises :class:`context.SimulatedCrash`, which fails the
  attempt with the ``WorkerCrashedError`` a SIGKILL gives and discards the inline worker
  (the next attempt initialises a fresh one, and no shutdown method runs).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Final, TypeVar

import attrs

from taskengine.coordinator import publishing, writer
from taskengine.core import clock, context, errors, handlers, models, transitions
from taskengine.pool import messages, outcomes, pool, worker_main
from taskengine.stores import base

__all__ = ["InlineRunner", "is_inline"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest wait for the callbacks of a step to run before ``run_next`` returns.
CALLBACK_FLUSH_TIMEOUT: Final = 30.0

_inline: contextvars.ContextVar[bool] = contextvars.ContextVar("taskengine_inline", default=False)


def is_inline() -> bool:
    """Whether the calling code runs inside an inline attempt."""
    return _inline.get()


@attrs.define
class _InlineWorker:
    """The state a worker process would hold: the handler, its event loop, its task count."""

    spec: handlers.HandlerSpec
    handler: Callable[[Any], Any]
    loop: asyncio.AbstractEventLoop | None = None
    tasks_done: int = 0

    def event_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def close(self, *, graceful: bool) -> None:
        if graceful:
            error = worker_main.run_shutdown(self.spec.module, self.spec.shutdown_method)
            if error is not None:
                log.error(
                    "shutdown method of the inline %r worker raised %s: %s",
                    self.spec.task_type,
                    error.type,
                    error.message,
                    extra={"task_type": self.spec.task_type},
                )
        if self.loop is not None:
            self.loop.close()
            self.loop = None


class InlineRunner:
    """Runs attempts in the calling thread; offers the reactor's interface to the engine."""

    def __init__(
        self,
        *,
        store: base.TaskStore,
        task_writer: writer.TaskWriter,
        publisher: publishing.Publisher,
        clock_: clock.Clock,
        node_identity: str,
    ) -> None:
        self._store = store
        self._writer = task_writer
        self._publisher = publisher
        self._clock = clock_
        self._node = node_identity
        self._specs: dict[str, handlers.HandlerSpec] = {}
        self._workers: dict[str, _InlineWorker] = {}
        self._running: str | None = None
        self._running_type: str | None = None
        self._lock = threading.Lock()
        # Per type: the counters the reactor keeps per pool, for ``TaskEngine.stats()``.
        self._counters: dict[str, dict[str, float]] = {}

    # -- the reactor's interface ----------------------------------------------------------

    def start(self) -> None:
        """Nothing to start: attempts run only when asked for."""

    def wake(self) -> None:
        """Nothing to wake: there is no dispatching thread."""

    def wake_for(self, task_type: str, due: datetime) -> None:
        """Nothing to wake: there is no dispatching thread."""

    def submit(self, command: Callable[[], T]) -> Future[T]:
        """Run ``command`` now, in the caller; its outcome is in the returned future."""
        future: Future[T] = Future()
        try:
            future.set_result(command())
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def stop(self, timeout: float) -> None:
        """Run every inline worker's shutdown method (``timeout`` is not needed inline)."""
        for task_type in list(self._workers):
            self._retire(task_type)

    def register(self, spec: handlers.HandlerSpec) -> None:
        """Use ``spec`` for the next attempts of its type (the old inline worker retires)."""
        self._specs[spec.task_type] = spec
        self._retire(spec.task_type)

    def unregister(self, task_type: str) -> None:
        """Drop a type's registration; its pending tasks wait."""
        self._specs.pop(task_type, None)
        self._retire(task_type)

    def terminate(self, task_id: str) -> bool:
        """Nothing to kill: the record was already changed, so the fenced outcome is dropped."""
        return self._running == task_id

    def held_task_ids(self) -> None:
        """None: attempts run inside ``run_next`` calls, so no claim is held between them."""
        return None

    def pool_facts(self) -> dict[str, pool.PoolFacts]:
        """The pool figures of the inline worker of each registered type."""
        facts: dict[str, pool.PoolFacts] = {}
        for task_type in self._specs:
            counters = self._counters.get(task_type, {})
            present = task_type in self._workers
            facts[task_type] = pool.PoolFacts(
                pids=(os.getpid(),) if present else (),
                alive=1 if present else 0,
                busy=1 if self._running is not None and self._running_type == task_type else 0,
                tasks_done=int(counters.get("tasks_done", 0)),
                failures=int(counters.get("failures", 0)),
                crashes=int(counters.get("crashes", 0)),
                run_seconds_total=counters.get("run_seconds_total", 0.0),
                max_worker_count=1,
            )
        return facts

    def _count(self, task_type: str, **steps: float) -> None:
        counters = self._counters.setdefault(task_type, {})
        for name, step in steps.items():
            counters[name] = counters.get(name, 0) + step

    def _retire(self, task_type: str) -> None:
        worker = self._workers.pop(task_type, None)
        if worker is not None:
            worker.close(graceful=True)

    # -- running --------------------------------------------------------------------------

    def run_next(self) -> bool:
        """Claim and run the earliest due attempt of a registered type; False if none is due."""
        if is_inline():
            raise errors.TaskEngineError(
                "run_next()/run_until_idle() was called from inside an inline attempt"
            )
        # One attempt at a time, even when several test threads drive the engine.
        with self._lock:
            return self._run_next()

    def _run_next(self) -> bool:
        now = self._clock.now()
        for task_type in self._due_types(now):
            _, claimed = self._writer.commit(
                [], [(task_type, 1)], now, transitions.Claim(now, self._node)
            )
            if claimed[0]:
                self._run(claimed[0][0])
                self._publisher.flush(CALLBACK_FLUSH_TIMEOUT)
                return True
        self._publisher.flush(CALLBACK_FLUSH_TIMEOUT)
        return False

    def run_until_idle(self, max_attempts: int | None) -> int:
        """Run due attempts until none is due; return how many ran.

        Raises:
            TaskEngineError: still not idle after ``max_attempts`` attempts.
        """
        ran = 0
        while self.run_next():
            ran += 1
            if max_attempts is not None and ran >= max_attempts and self.has_due():
                raise errors.TaskEngineError(
                    f"run_until_idle(): still not idle after {ran} attempts"
                )
        return ran

    def has_due(self) -> bool:
        """Whether an attempt of a registered type is due now."""
        return bool(self._due_types(self._clock.now()))

    def _due_types(self, now: datetime) -> list[str]:
        """Registered types with due work, the earliest due first (ties by type name)."""
        due: list[tuple[datetime, str]] = []
        for task_type in self._specs:
            moment = self._store.next_due([task_type])
            if moment is not None and moment <= now:
                due.append((moment, task_type))
        return [task_type for _, task_type in sorted(due)]

    def _run(self, task: models.BackgroundTask) -> None:
        spec = self._specs[task.type]
        worker = self._workers.get(task.type)
        if worker is None:
            try:
                handler = worker_main.load_handler(spec.module, spec.method, spec.initialise_method)
            except BaseException as exc:
                self._finish(task, error=worker_main.init_error(spec.module, spec.method, exc))
                return
            worker = self._workers[task.type] = _InlineWorker(spec=spec, handler=handler)
        job = messages.Run(task.id, task.type, task.attempts, task.payload_blob, 0)
        latest = [task]
        started = self._clock.now()
        self._running = task.id
        self._running_type = task.type
        token = _inline.set(True)
        try:
            done = worker_main.run_attempt(
                worker.handler, job, self._reporter(latest), worker.event_loop
            )
        except context.SimulatedCrash:
            del self._workers[task.type]
            worker.close(graceful=False)
            self._count(task.type, crashes=1)
            self._finish(latest[0], error=self._crash_error(latest[0], spec))
            return
        finally:
            _inline.reset(token)
            self._running = None
        worker.tasks_done += 1
        elapsed = (self._clock.now() - started).total_seconds()
        timed_out = spec.execution_timeout is not None and elapsed > spec.execution_timeout
        if timed_out:
            self._count(task.type, crashes=1)  # as with pools: the attempt ended with its worker
        else:
            failed = 1 if done.error is not None else 0
            self._count(
                task.type, tasks_done=1, failures=failed, run_seconds_total=done.run_seconds
            )
        if timed_out:
            error = models.TaskError.of(
                errors.TaskTimeoutError,
                f"attempt {task.attempts} ran longer than execution_timeout="
                f"{spec.execution_timeout}s ({elapsed:g}s on the engine clock, inline)",
            )
            self._finish(latest[0], error=error)
        elif done.error is not None:
            self._finish(latest[0], error=done.error)
        else:
            self._finish(latest[0], result_blob=done.result_blob)
        limit = spec.max_tasks_per_worker
        if limit is not None and worker.tasks_done >= limit:
            self._retire(task.type)

    def _crash_error(
        self, task: models.BackgroundTask, spec: handlers.HandlerSpec
    ) -> models.TaskError:
        return outcomes.exit_error(
            pid=os.getpid(),
            attempt=task.attempts,
            reason=None,
            was_starting=False,
            exitcode=-signal.SIGKILL,
            spec=spec,
            start_timeout=0.0,
        )

    def _finish(
        self,
        task: models.BackgroundTask,
        *,
        error: models.TaskError | None = None,
        result_blob: bytes | None = None,
    ) -> None:
        now = self._clock.now()
        if error is None:
            assert result_blob is not None
            new = transitions.succeed(task, result_blob, now)
        else:
            new = transitions.fail_attempt(task, error, now)
        # Fenced on the claimed status and attempt: a task cancelled or removed while its
        # handler ran is not written back.
        self._writer.apply([writer.change_for(task, new)])

    def _reporter(self, latest: list[models.BackgroundTask]) -> Callable[[float, str | None], None]:
        def report(fraction: float, message: str | None) -> None:
            task = latest[0]
            new = transitions.report_progress(task, fraction, self._clock.now())
            update = base.Update(
                task=new, expected_status=task.status, expected_attempts=task.attempts
            )
            change = writer.Change(write=update, task=new, status_changed=False)
            if self._writer.apply([change])[0]:
                latest[0] = new

        return report
