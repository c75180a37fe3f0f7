"""``TaskEngine``: the coordinator facade of contract.md#engine.

The engine validates every argument, then delegates: the store keeps the task table, the writer
applies fenced changes and announces them, the reactor runs the pools, the retention sweeper
deletes expired tasks.  Every public method is thread-safe.

Size: this is the public facade, one class whose methods are the API.  Each is a few lines of
checks and a delegation, under a docstring that is the method's reference; the work itself is
in the parts it delegates to.  Splitting the class would scatter the API, not shorten any step.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final

from taskengine.coordinator import (
    inline,
    leases,
    publishing,
    reactor,
    registry,
    retention,
    runner,
    writer,
)
from taskengine.coordinator import stats as engine_stats
from taskengine.core import clock, codec, errors, handlers, ids, models, transitions, validation
from taskengine.core import cursor as cursors
from taskengine.stores import base
from taskengine.stores.memory.store import MemoryStore

__all__ = ["TaskEngine"]

log = logging.getLogger(__name__)

#: Largest encoded payload accepted by ``create`` unless configured otherwise.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 256 * 1024 * 1024
#: Longest wait for the reactor to apply a registration (it normally takes microseconds).
_COMMAND_TIMEOUT: Final = 30.0
#: How often a compare-and-set API change is retried when another writer got there first.
_CAS_TRIES: Final = 20
#: The accepted values of ``execution``.
EXECUTION_MODES: Final = ("processes", "inline")
#: ``run_until_idle`` gives up after this many attempts (a task failing forever, due at once).
DEFAULT_MAX_INLINE_ATTEMPTS: Final = 100_000

Status = models.TaskStatus


def _default_node_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def _default_start_method() -> str:
    # forkserver: safe with a threaded coordinator (unlike fork) and much cheaper per worker
    # than spawn.  Chosen explicitly and never installed as the process-wide default.
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class TaskEngine:
    """The coordinator: owns the task table, the store and the worker pools.

    Args:
        store: the persistence backend; a new ``MemoryStore`` by default.
        node_identity: this engine's name in ``BackgroundTask.node_identity``;
            ``<hostname>:<pid>:<random>`` by default.
        retry_interval: seconds between a failed attempt and the next, when ``create`` does
            not say.
        max_total_workers: cap on the sum of all pools' workers; ``os.cpu_count()`` by default.
        clock: the time source (inject ``taskengine.testing.FakeClock`` in tests).
        start_method: ``"forkserver"`` (default on Linux), ``"spawn"`` or ``"fork"``; the
            multiprocessing start method of the workers, used through an explicit context.
        max_payload_bytes: largest encoded payload ``create`` accepts (256 MiB by default).
        execution: ``"processes"`` (default) runs handlers in pools of worker processes;
            ``"inline"`` runs them in the calling thread, only when :meth:`run_until_idle` or
            :meth:`run_next` is called (for tests; see ``docs/howto/testing.md``).

    Raises:
        TaskValidationError: an argument is invalid.
        StoreError: the store cannot be opened.
    """

    def __init__(
        self,
        store: base.TaskStore | None = None,
        *,
        node_identity: str | None = None,
        retry_interval: float | timedelta = 5.0,
        max_total_workers: int | None = None,
        clock: clock.Clock | None = None,
        start_method: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        execution: str = "processes",
    ) -> None:
        from taskengine.core import clock as clock_module

        if store is not None and not isinstance(store, base.TaskStore):
            raise errors.TaskValidationError("store", store, "expected a TaskStore")
        self._node = (
            _default_node_identity()
            if node_identity is None
            else validation.check_identifier_text("node_identity", node_identity)
        )
        interval = validation.check_duration("retry_interval", retry_interval)
        assert interval is not None
        self._retry_interval = interval
        total = validation.check_optional_positive_int("max_total_workers", max_total_workers)
        self._max_total = total if total is not None else (os.cpu_count() or 1)
        if clock is not None and not isinstance(clock, clock_module.Clock):
            raise errors.TaskValidationError("clock", clock, "expected a Clock (now, listeners)")
        self._clock: clock_module.Clock = clock or clock_module.SystemClock()
        method = _default_start_method() if start_method is None else start_method
        if method not in multiprocessing.get_all_start_methods():
            raise errors.TaskValidationError(
                "start_method", start_method, "not available on this platform"
            )
        max_bytes = validation.check_optional_positive_int("max_payload_bytes", max_payload_bytes)
        if max_bytes is None:
            raise errors.TaskValidationError("max_payload_bytes", None, "expected an int >= 1")
        self._max_payload = max_bytes
        self._execution = execution
        if not isinstance(execution, str) or execution not in EXECUTION_MODES:
            raise errors.TaskValidationError(
                "execution", execution, "expected 'processes' or 'inline'"
            )
        self._store: base.TaskStore = MemoryStore() if store is None else store
        self._store.open()
        self._handlers: dict[str, handlers.HandlerSpec] = {}
        self._sweeper = retention.RetentionSweeper(self._store, self._clock)
        self._publisher = publishing.Publisher(self._handlers.get, self._sweeper.expires_at)
        self._writer = writer.TaskWriter(self._store, self._publisher)
        self._watcher = publishing.Watcher(self._store, self._publisher, self._writer.barrier)
        self._status_reader = self._store if isinstance(self._store, base.StatusReader) else None
        self._ids = ids.IdGenerator()
        self._reactor: runner.Runner
        # Set in inline execution only: the runner behind run_next()/run_until_idle().
        self._inline: inline.InlineRunner | None = None
        if execution == "inline":
            self._reactor = self._inline = inline.InlineRunner(
                store=self._store,
                task_writer=self._writer,
                publisher=self._publisher,
                clock_=self._clock,
                node_identity=self._node,
            )
        else:
            self._reactor = reactor.Reactor(
                store=self._store,
                task_writer=self._writer,
                clock_=self._clock,
                node_identity=self._node,
                max_total_workers=self._max_total,
                mp_context=multiprocessing.get_context(method),
            )
        self._cluster: leases.ClusterDuties | None = None
        #: Other nodes share the store: they may finish or run tasks this engine knows nothing of.
        self._shared = self._store.capabilities.shared and isinstance(
            self._store, base.SharedTaskStore
        )
        self._lifecycle = threading.Lock()
        self._started = False
        self._stopped = False
        self._clock.add_listener(self._on_clock_moved)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def node_identity(self) -> str:
        """This engine's node name."""
        return self._node

    @property
    def clock(self) -> clock.Clock:
        """The time source the engine was given (a ``SystemClock`` by default)."""
        return self._clock

    @property
    def execution(self) -> str:
        """How handlers run: ``"processes"`` or ``"inline"``."""
        return self._execution

    @property
    def store(self) -> base.TaskStore:
        """The persistence backend."""
        return self._store

    def start(self) -> TaskEngine:
        """Start dispatching (recovering tasks a crashed run left processing); returns self."""
        with self._lifecycle:
            self._check_open()
            if self._started:
                return self
            self._store.acquire_dispatch_lock(self._node)
            self._recover_interrupted()
            self._publisher.start()
            self._reactor.start()
            self._sweeper.start()
            self._cluster = leases.start_cluster_duties(
                self._store,
                self._writer,
                self._clock,
                self._node,
                self._reactor.wake,
                self._held_task_ids,
                self._terminate_here,
            )
            self._started = True
        return self

    def stop(self, timeout: float | timedelta = 30.0) -> None:
        """Stop dispatching and end every worker; then close the store.

        Running attempts may finish for up to ``timeout`` seconds; attempts still running then
        are killed and count as crashed (``WorkerCrashedError``, retries apply).  Every worker
        runs its shutdown method.  Calling ``stop`` again does nothing.
        """
        seconds = validation.check_duration("timeout", timeout)
        assert seconds is not None
        with self._lifecycle:
            if self._stopped:
                return
            self._stopped = True
        self._clock.remove_listener(self._on_clock_moved)
        self._reactor.stop(seconds)
        self._sweeper.stop()
        if self._cluster is not None:
            self._cluster.stop()
        self._watcher.stop(timeout=5.0)
        self._publisher.stop(timeout=5.0)
        self._store.close()

    def __enter__(self) -> TaskEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_open(self) -> None:
        if self._stopped:
            raise errors.EngineStoppedError("the engine was stopped")

    # -- inline execution -----------------------------------------------------------------

    def run_next(self) -> bool:
        """Run at most one due attempt in the calling thread (``execution="inline"`` only).

        The engine starts on the first call if it was not started.  Returns after the
        attempt's outcome is stored and its state-change callbacks have run.

        Returns:
            True if an attempt ran; False if none was due.

        Raises:
            TaskEngineError: the engine does not use inline execution, or the call came from
                inside an inline attempt.
            EngineStoppedError: the engine was stopped.
        """
        return self._inline_runner().run_next()

    def run_until_idle(self, *, max_attempts: int | None = DEFAULT_MAX_INLINE_ATTEMPTS) -> int:
        """Run due attempts in the calling thread until none is due; return how many ran.

        Only ``execution="inline"`` engines.  "Due" is judged on the engine's clock, so a
        retry or ``run_at`` in the future waits for ``clock.advance(...)``.

        Raises:
            TaskEngineError: not an inline engine; called from inside an inline attempt; or
                still not idle after ``max_attempts`` attempts (a task that fails forever and
                is due again at once).
            TaskValidationError: ``max_attempts`` is not a positive int.
            EngineStoppedError: the engine was stopped.
        """
        limit = validation.check_optional_positive_int("max_attempts", max_attempts)
        return self._inline_runner().run_until_idle(limit)

    def _inline_runner(self) -> inline.InlineRunner:
        inline_runner = self._inline
        if inline_runner is None:
            raise errors.TaskEngineError(
                "run_next()/run_until_idle() need TaskEngine(..., execution='inline')"
            )
        self._check_open()
        if not self._started:
            self.start()
        return inline_runner

    def _on_clock_moved(self) -> None:
        self._reactor.wake()
        self._sweeper.wake()

    def _recover_interrupted(self) -> None:
        """Count the cut-short attempts of a previous run of this (single-node) store."""
        if self._store.capabilities.shared:
            return
        now = self._clock.now()
        changes = []
        for task in self._store.processing():
            log.info(
                "task %s was processing on %s when it stopped; counting attempt %d as crashed",
                task.id,
                task.node_identity,
                task.attempts,
                extra={"task_id": task.id, "task_type": task.type, "node": self._node},
            )
            error = models.TaskError.of(
                errors.WorkerCrashedError,
                f"the engine ({task.node_identity}) stopped or crashed during attempt "
                f"{task.attempts}",
            )
            changes.append(writer.change_for(task, transitions.fail_attempt(task, error, now)))
        if changes:
            log.warning(
                "re-queued %d task(s) interrupted by a previous crash",
                len(changes),
                extra={"node": self._node},
            )
            self._writer.apply(changes)

    # -- handlers -------------------------------------------------------------------------

    def register_handler(
        self,
        task_type: str,
        module: str,
        method: str,
        state_change_callback: handlers.StateChangeCallback | None = None,
        *,
        max_worker_count: int | None = 1,
        idle_shutdown_timeout: float | timedelta | None = 60.0,
        initialise_method: str | None = None,
        shutdown_method: str | None = None,
        execution_timeout: float | timedelta | None = None,
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | None = None,
    ) -> None:
        """Run tasks of ``task_type`` with ``module.method`` in a pool of worker processes.

        Registering a type again replaces its handler; running attempts finish on the old one.

        Raises:
            TaskValidationError: an argument is invalid.
            HandlerNotFoundError: ``module`` cannot be found.
        """
        self._check_open()
        spec = registry.make_spec(
            task_type,
            module,
            method,
            state_change_callback,
            max_worker_count=max_worker_count,
            idle_shutdown_timeout=idle_shutdown_timeout,
            initialise_method=initialise_method,
            shutdown_method=shutdown_method,
            execution_timeout=execution_timeout,
            max_tasks_per_worker=max_tasks_per_worker,
            max_memory_per_worker=max_memory_per_worker,
        )
        self._handlers[spec.task_type] = spec
        self._on_reactor(lambda: self._reactor.register(spec))

    def unregister_handler(self, task_type: str) -> None:
        """Drop a handler and shut its pool down gracefully; its pending tasks wait.

        Raises:
            HandlerNotFoundError: no handler is registered for ``task_type``.
        """
        self._check_open()
        checked = validation.check_identifier_text("task_type", task_type)
        if self._handlers.pop(checked, None) is None:
            raise errors.HandlerNotFoundError(f"no handler is registered for {checked!r}")
        self._on_reactor(lambda: self._reactor.unregister(checked))

    # -- creating -------------------------------------------------------------------------

    def create(
        self,
        task_type: str,
        payload: Any = None,
        *,
        retry_count: int | None = None,
        retry_interval: float | timedelta | None = None,
        retain_for: float | timedelta | None = 0,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Store a new pending task and return its id (once stored, durably on a durable store).

        Args:
            task_type: selects the handler; a type with no handler yet is accepted.
            payload: any cloudpickle-able value; the task keeps a copy.
            retry_count: None retries forever, 0 never, N up to N times.
            retry_interval: seconds between a failure and the next attempt (engine default).
            retain_for: 0 deletes the task when it finishes, None or -1 keeps it forever,
                N > 0 keeps it N seconds.
            run_at: the task does not start before this (aware) datetime.
            idempotency_key: while a task created with this key exists, return its id instead.

        Raises:
            TaskValidationError: an argument is invalid; nothing was stored.
            StoreError: the store failed; nothing was acknowledged.
        """
        self._check_open()
        key = (
            None
            if idempotency_key is None
            else validation.check_identifier_text("idempotency_key", idempotency_key)
        )
        tasks = self._new_tasks(
            task_type, [payload], retry_count, retry_interval, retain_for, run_at, key
        )
        return self._insert(tasks)[0]

    def create_many(
        self,
        task_type: str,
        payloads: Iterable[Any],
        *,
        retry_count: int | None = None,
        retry_interval: float | timedelta | None = None,
        retain_for: float | timedelta | None = 0,
        run_at: datetime | None = None,
    ) -> list[str]:
        """Like ``create`` for each payload, stored in one batch: all or nothing.

        Raises:
            TaskValidationError: an argument or any payload is invalid; nothing was stored.
            StoreError: the store failed; nothing was stored.
        """
        self._check_open()
        if isinstance(payloads, str | bytes | dict) or not isinstance(payloads, Iterable):
            raise errors.TaskValidationError("payloads", payloads, "expected a list of payloads")
        tasks = self._new_tasks(
            task_type, list(payloads), retry_count, retry_interval, retain_for, run_at, None
        )
        return self._insert(tasks) if tasks else []

    def _new_tasks(
        self,
        task_type: object,
        payloads: list[Any],
        retry_count: object,
        retry_interval: object,
        retain_for: object,
        run_at: object,
        idempotency_key: str | None,
    ) -> list[models.BackgroundTask]:
        checked_type = validation.check_identifier_text("task_type", task_type)
        count = validation.check_count("retry_count", retry_count, nullable=True)
        interval = validation.check_duration("retry_interval", retry_interval, nullable=True)
        keep = validation.check_retain_for(retain_for)
        start_at = validation.check_aware_datetime("run_at", run_at)
        blobs = [self._encode_payload(payload) for payload in payloads]
        now = self._clock.now()
        now_ms = clock.to_millis(now)
        return [
            transitions.new_task(
                task_id=self._ids.new_id(now_ms),
                task_type=checked_type,
                payload_blob=blob,
                now=now,
                retry_count=count,
                retry_interval=self._retry_interval if interval is None else interval,
                retain_for=keep,
                run_at=None if start_at is None else clock.truncate_to_millis(start_at),
                idempotency_key=idempotency_key,
            )
            for blob in blobs
        ]

    def _encode_payload(self, payload: Any) -> bytes:
        try:
            blob = codec.encode(payload)
        except Exception as exc:  # SystemExit / KeyboardInterrupt from __reduce__ propagate
            raise errors.TaskValidationError(
                "payload", payload, f"cannot be pickled: {type(exc).__name__}: {exc}"
            ) from exc
        if len(blob) > self._max_payload:
            raise errors.TaskValidationError(
                "payload",
                f"<{len(blob)} bytes encoded>",
                f"larger than max_payload_bytes={self._max_payload}",
            )
        return blob

    def _insert(self, tasks: list[models.BackgroundTask]) -> list[str]:
        task_ids = self._store.insert_many(tasks)
        dues = [task.date_next_process for task in tasks if task.date_next_process is not None]
        if dues:
            self._reactor.wake_for(tasks[0].type, min(dues))
        else:
            self._reactor.wake()
        return task_ids

    # -- reading --------------------------------------------------------------------------

    def _visible(self, task_id: object) -> models.BackgroundTask | None:
        checked = validation.check_task_id(task_id)
        if not _encodable(checked):
            return None
        task = self._store.get(checked)
        if task is None:
            return None
        # The clock is read only when retention can hide the task (wait() calls this too).
        if task.date_retain_until is not None and not transitions.is_visible(
            task, self._clock.now()
        ):
            return None
        return task

    def get(self, task_id: str) -> models.BackgroundTask | None:
        """The task's current record, or None for an unknown (or expired) id.

        Raises:
            TaskValidationError: ``task_id`` is not a str.
        """
        self._check_open()
        return self._visible(task_id)

    def wait(self, task_id: str, timeout: float | timedelta | None = None) -> models.BackgroundTask:
        """Block until the task is finished and return that snapshot.

        This engine's own changes wake the call at once.  A change another process commits
        (a worker node, a CLI command, another node on PostgreSQL) is seen by the engine's
        watcher within :data:`publishing.WATCH_INTERVAL` (0.1 s) on SQLite and within
        :data:`publishing.WATCH_POLL_MAX` (0.5 s) on PostgreSQL, whether or not this engine
        dispatches.

        Raises:
            TaskNotFoundError: the id is unknown (or the task was removed while waiting).
            TimeoutError: ``timeout`` seconds passed first.
            EngineStoppedError: the engine stopped while waiting.
            TaskValidationError: an argument is invalid.
        """
        with self._open_wait(task_id, timeout) as waiting:
            done = waiting.finished_now()
            if done is not None:
                return done
            with waiting.watching():
                if not waiting.wakeup.wait(waiting.timeout):
                    raise TimeoutError(
                        f"task {waiting.task_id} did not finish within {waiting.timeout}s"
                    )
            return waiting.result()

    def _open_wait(
        self, task_id: object, timeout: object, wakeup: publishing.Wakeup | None = None
    ) -> publishing.FinishWait:
        """Internal interface, used by :meth:`wait` and ``AsyncTaskEngine.wait``; not public API.

        Checks that the engine is open and the arguments (as ``wait`` documents), then
        subscribes to the task finishing: the caller follows ``publishing.FinishWait``'s order.
        """
        self._check_open()
        checked = validation.check_task_id(task_id)
        seconds = validation.check_duration("timeout", timeout, nullable=True)
        return publishing.FinishWait(
            self._publisher, self._watcher, checked, seconds, self._finished_now, wakeup
        )

    def _finished_now(self, task_id: str) -> models.BackgroundTask | None:
        """The final snapshot if the task already finished, None if it has not (``wait``).

        Call it after subscribing, so that a finish in between is announced to the subscriber.

        Raises:
            TaskNotFoundError: the id is unknown.
        """
        if self._status_reader is not None and _encodable(task_id):
            # Most tasks waited for have not finished yet: learn that without reading the
            # task whole (its payload may be large, and the store may copy it out).  Anything
            # else (gone, finished, retained) takes the full read below.
            found = self._status_reader.status_of(task_id)
            if found is not None and not found[0].is_final and found[1] is None:
                return None
        task = self._visible(task_id)
        if task is None:
            # A task that just finished with retain_for=0 is deleted by the same commit that
            # finishes it, and announced right after under the writer's lock: wait for any
            # such announcement before concluding that the id is unknown.
            self._writer.barrier()
            cached = self._publisher.finished(task_id)
            if cached is not None:
                return cached
            raise errors.TaskNotFoundError(task_id)
        return task if task.status.is_final else None

    def stats(self) -> engine_stats.EngineStats:
        """A snapshot of the task table (counts per type and status) and of this node's pools.

        Counts cover every visible task in the store; worker figures cover only the pools of
        this engine, and are zero on an engine that was not started.

        Raises:
            StoreError: the store failed.
        """
        self._check_open()
        now = self._clock.now()
        counts = self._store.count_tasks(now)
        facts: dict[str, runner.PoolFacts] = {}
        with self._lifecycle:
            live = self._started and not self._stopped
        if live:
            facts = self._reactor.submit(self._reactor.pool_facts).result(timeout=_COMMAND_TIMEOUT)
        return engine_stats.build(
            node_identity=self._node,
            now=now,
            counts=counts,
            pool_facts=facts,
            registered=list(self._handlers),
            is_dispatching=live,
        )

    def query(
        self,
        task_type: str | None = None,
        status: models.TaskStatus | str | None = None,
        sort_property: str = "date_created",
        sort_direction: models.SortDirection | str = "asc",
        cursor: str | None = None,
        page_size: int = 20,
    ) -> models.QueryResult:
        """One page of tasks, filtered and in a total, stable order.

        Raises:
            TaskValidationError: an argument is invalid (unknown sort field, bad cursor, page
                size outside 1..1000, ...).
        """
        self._check_open()
        spec = _query_spec(task_type, status, sort_property, sort_direction)
        size = validation.check_page_size(page_size)
        after = None if cursor is None else cursors.decode_cursor(spec, cursor)
        rows = self._store.query(spec, after, size + 1, self._clock.now())
        page, more = rows[:size], len(rows) > size
        next_cursor = None
        if more and page:
            value, last_id = cursors.sort_key(page[-1], spec.sort_field)
            position = cursors.CursorPosition(value=value, task_id=last_id)
            next_cursor = cursors.encode_cursor(spec, position)
        return models.QueryResult(entities=page, cursor=next_cursor)

    # -- changing -------------------------------------------------------------------------

    def _compare_and_set(
        self,
        task_id: object,
        decide: Callable[[models.BackgroundTask, datetime], models.BackgroundTask],
    ) -> tuple[models.BackgroundTask, models.BackgroundTask] | None:
        """Read, decide, write with a fence; retry when another writer got there first."""
        for _ in range(_CAS_TRIES):
            task = self._visible(task_id)
            if task is None:
                return None
            try:
                new = decide(task, self._clock.now())
            except transitions.Blocked:
                return None
            if self._writer.apply([writer.change_for(task, new)])[0]:
                return task, new
        return None

    def retry(self, task_id: str) -> bool:
        """Run a waiting pending task now, or revive a failed one for one more attempt.

        Returns:
            True when it acted; False for other statuses and unknown ids.
        """
        self._check_open()
        if self._compare_and_set(task_id, transitions.retry) is None:
            return False
        self._reactor.wake()
        return True

    def cancel(self, task_id: str, *, terminate: bool = False) -> bool:
        """Cancel a pending task, or with ``terminate=True`` a processing one.

        A terminated attempt's worker is killed and replaced.

        Returns:
            True when it acted; False for other statuses and unknown ids.
        """
        self._check_open()
        if not isinstance(terminate, bool):
            raise errors.TaskValidationError("terminate", terminate, "expected a bool")
        outcome = self._compare_and_set(
            task_id, lambda task, now: transitions.cancel(task, now, terminate=terminate)
        )
        if outcome is None:
            return False
        old, _ = outcome
        if old.status is Status.PROCESSING:
            self._terminate(old)
        return True

    def remove(self, task_id: str) -> bool:
        """Delete a task whatever its status; a processing one has its attempt terminated.

        Returns:
            True when something was removed.
        """
        self._check_open()
        for _ in range(_CAS_TRIES):
            task = self._visible(task_id)
            if task is None:
                return False
            # Fenced on the status just read: a claim in between makes this fail and re-read,
            # so a processing attempt is always terminated (never left to run).
            delete = base.Delete(
                task_id=task.id, expected_status=task.status, expected_attempts=task.attempts
            )
            change = writer.Change(write=delete, task=None, status_changed=False)
            if self._writer.apply([change])[0]:
                if task.status is Status.PROCESSING:
                    self._terminate(task)
                return True
        return False

    def _on_reactor(self, command: Callable[[], None]) -> None:
        """Run ``command`` on the reactor; once started, return only after it ran there.

        Waiting makes a registration take effect before ``register_handler`` returns, so a
        task created right after it never runs on the registration it replaced.
        """
        future = self._reactor.submit(command)
        if self._started and not self._stopped:
            future.result(timeout=_COMMAND_TIMEOUT)

    def _terminate(self, task: models.BackgroundTask) -> None:
        owner = task.node_identity
        if self._shared and owner is not None and owner != self._node:
            try:  # the owning node kills it; its late outcome is fenced out either way
                self._store.request_termination(owner, task.id)  # type: ignore[attr-defined]
            except errors.StoreError:
                log.warning("could not ask node %s to terminate task %s", owner, task.id)
            return
        self._terminate_here(task.id)

    def _held_task_ids(self) -> set[str] | None:
        """The attempts the reactor holds; None when it does not answer soon (stopping)."""
        running = self._reactor
        try:
            return running.submit(running.held_task_ids).result(timeout=2.0)
        except concurrent.futures.TimeoutError:
            return None

    def _terminate_here(self, task_id: str) -> None:
        self._reactor.submit(lambda: self._reactor.terminate(task_id))


def _encodable(task_id: str) -> bool:
    """Whether a store can hold ``task_id``: a lone surrogate has no UTF-8 form (SQL text)."""
    try:
        task_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def _query_spec(
    task_type: object, status: object, sort_property: object, sort_direction: object
) -> cursors.QuerySpec:
    return cursors.QuerySpec(
        task_type=None
        if task_type is None
        else validation.check_identifier_text("task_type", task_type),
        status=validation.check_status(status),
        sort_field=cursors.resolve_sort_property(sort_property),
        direction=validation.check_sort_direction(sort_direction),
    )
