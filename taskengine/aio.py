"""``AsyncTaskEngine``: the engine for asyncio services (FastAPI, Starlette, aiohttp ...).

Every method is a coroutine that never blocks the event loop.  Calls that touch the store run
in the loop's default executor (``asyncio.to_thread``) for as long as the store call takes.
``wait`` holds no thread while it waits: it subscribes to the engine's completion announcements
with an event whose ``set`` resolves a future on the loop (``loop.call_soon_threadsafe``), so a
thousand waiters cost a thousand futures, not a thousand threads.

State-change callbacks given to :meth:`AsyncTaskEngine.register_handler` that are ``async def``
run on the service's loop (the one that awaited ``start``), one at a time per task and in the
order the changes were stored; a plain function runs on the engine's callback thread as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from taskengine.coordinator import engine as engine_module
from taskengine.coordinator import stats as engine_stats
from taskengine.core import errors, handlers, models, validation

__all__ = ["AsyncTaskEngine"]

log = logging.getLogger(__name__)

T = TypeVar("T")
AsyncCallback = Callable[[models.BackgroundTask], Awaitable[object]]


class _LoopEvent(threading.Event):
    """A ``threading.Event`` whose ``set`` also resolves a future on an asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        super().__init__()
        self._loop = loop
        self._future = future

    def set(self) -> None:
        super().set()
        # A closed loop: nobody awaits the future any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self._future.done():
            self._future.set_result(None)


class AsyncTaskEngine:
    """Awaitable facade of a :class:`TaskEngine` for code running on an asyncio loop.

    Args:
        engine: the engine to drive; a new ``TaskEngine()`` (on a ``MemoryStore``) by default.
            Configure the store, workers and clock on the ``TaskEngine`` itself.

    Use it as ``async with AsyncTaskEngine(TaskEngine(store)) as engine: ...`` or call
    ``await start()`` and ``await stop()`` (for instance in a web framework's lifespan).
    It satisfies ``AsyncBackgroundTaskConnector``, the async form of the connector protocol.
    """

    def __init__(self, engine: engine_module.TaskEngine | None = None) -> None:
        if engine is not None and not isinstance(engine, engine_module.TaskEngine):
            raise errors.TaskValidationError("engine", engine, "expected a TaskEngine")
        self._engine = engine_module.TaskEngine() if engine is None else engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chains: dict[str, asyncio.Task[None]] = {}

    @property
    def engine(self) -> engine_module.TaskEngine:
        """The wrapped (thread-safe, blocking) engine."""
        return self._engine

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(function, *args, **kwargs))

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> AsyncTaskEngine:
        """Start dispatching; ``async def`` callbacks will run on the calling loop."""
        self._loop = asyncio.get_running_loop()
        await self._call(self._engine.start)
        return self

    async def stop(self, timeout: float | timedelta = 30.0) -> None:
        """Stop the engine (see ``TaskEngine.stop``), then let queued async callbacks finish."""
        await self._call(self._engine.stop, timeout)
        pending = list(self._chains.values())
        if pending:
            await asyncio.wait(pending, timeout=validation.check_duration("timeout", timeout))

    async def __aenter__(self) -> AsyncTaskEngine:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- handlers -------------------------------------------------------------------------

    async def register_handler(
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
        """``TaskEngine.register_handler``; an ``async def`` callback runs on this loop."""
        callback = state_change_callback
        if callback is not None and inspect.iscoroutinefunction(callback):
            callback = self._on_loop(callback)
        await self._call(
            self._engine.register_handler,
            task_type,
            module,
            method,
            callback,
            max_worker_count=max_worker_count,
            idle_shutdown_timeout=idle_shutdown_timeout,
            initialise_method=initialise_method,
            shutdown_method=shutdown_method,
            execution_timeout=execution_timeout,
            max_tasks_per_worker=max_tasks_per_worker,
            max_memory_per_worker=max_memory_per_worker,
        )

    async def unregister_handler(self, task_type: str) -> None:
        """``TaskEngine.unregister_handler``."""
        await self._call(self._engine.unregister_handler, task_type)

    def _on_loop(self, callback: AsyncCallback) -> Callable[[models.BackgroundTask], None]:
        def on_change(task: models.BackgroundTask) -> None:
            loop = self._loop
            if loop is None:
                log.warning(
                    "async state-change callback dropped: the engine was not started with "
                    "AsyncTaskEngine.start()",
                    extra={"task_id": task.id, "task_type": task.type},
                )
                return
            try:
                loop.call_soon_threadsafe(self._schedule, callback, task)
            except RuntimeError:
                log.warning(
                    "async state-change callback dropped: its event loop is closed",
                    extra={"task_id": task.id, "task_type": task.type},
                )

        return on_change

    def _schedule(self, callback: AsyncCallback, task: models.BackgroundTask) -> None:
        """On the loop: run ``callback(task)`` after the task's previous callback finished."""
        assert self._loop is not None
        previous = self._chains.get(task.id)
        job = self._loop.create_task(_run_callback(previous, callback, task))
        self._chains[task.id] = job

        def forget(done: asyncio.Task[None], task_id: str = task.id) -> None:
            if self._chains.get(task_id) is done:
                del self._chains[task_id]

        job.add_done_callback(forget)

    # -- tasks ----------------------------------------------------------------------------

    async def create(
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
        """``TaskEngine.create``: store a new pending task and return its id."""
        return await self._call(
            self._engine.create,
            task_type,
            payload,
            retry_count=retry_count,
            retry_interval=retry_interval,
            retain_for=retain_for,
            run_at=run_at,
            idempotency_key=idempotency_key,
        )

    async def create_many(
        self,
        task_type: str,
        payloads: Iterable[Any],
        *,
        retry_count: int | None = None,
        retry_interval: float | timedelta | None = None,
        retain_for: float | timedelta | None = 0,
        run_at: datetime | None = None,
    ) -> list[str]:
        """``TaskEngine.create_many``: store several tasks in one batch (all or nothing)."""
        return await self._call(
            self._engine.create_many,
            task_type,
            payloads,
            retry_count=retry_count,
            retry_interval=retry_interval,
            retain_for=retain_for,
            run_at=run_at,
        )

    async def get(self, task_id: str) -> models.BackgroundTask | None:
        """``TaskEngine.get``."""
        return await self._call(self._engine.get, task_id)

    async def wait(
        self, task_id: str, timeout: float | timedelta | None = None
    ) -> models.BackgroundTask:
        """``TaskEngine.wait`` without holding a thread while the task runs.

        Changes committed by other processes are seen with the same bound as
        ``TaskEngine.wait`` (0.1 s on SQLite, 0.5 s on PostgreSQL), dispatching or not.

        Raises:
            TaskNotFoundError: the id is unknown (or the task was removed while waiting).
            TimeoutError: ``timeout`` seconds passed first.
            EngineStoppedError: the engine stopped while waiting.
            TaskValidationError: an argument is invalid.
        """
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with self._engine._open_wait(task_id, timeout, _LoopEvent(loop, woken)) as waiting:
            done = await self._call(waiting.finished_now)
            if done is not None:
                return done
            # The engine's watcher sees changes other processes commit (same bound as wait).
            with waiting.watching():
                try:
                    await asyncio.wait_for(woken, waiting.timeout)
                except TimeoutError:
                    raise TimeoutError(
                        f"task {waiting.task_id} did not finish within {waiting.timeout}s"
                    ) from None
            return waiting.result()

    async def query(
        self,
        task_type: str | None = None,
        status: models.TaskStatus | str | None = None,
        sort_property: str = "date_created",
        sort_direction: models.SortDirection | str = "asc",
        cursor: str | None = None,
        page_size: int = 20,
    ) -> models.QueryResult:
        """``TaskEngine.query``."""
        return await self._call(
            self._engine.query, task_type, status, sort_property, sort_direction, cursor, page_size
        )

    async def retry(self, task_id: str) -> bool:
        """``TaskEngine.retry``."""
        return await self._call(self._engine.retry, task_id)

    async def cancel(self, task_id: str, *, terminate: bool = False) -> bool:
        """``TaskEngine.cancel``."""
        return await self._call(self._engine.cancel, task_id, terminate=terminate)

    async def remove(self, task_id: str) -> bool:
        """``TaskEngine.remove``."""
        return await self._call(self._engine.remove, task_id)

    async def stats(self) -> engine_stats.EngineStats:
        """``TaskEngine.stats``."""
        return await self._call(self._engine.stats)


async def _run_callback(
    previous: asyncio.Task[None] | None, callback: AsyncCallback, task: models.BackgroundTask
) -> None:
    if previous is not None:
        await asyncio.wait([previous])  # order per task; its outcome was logged there
    try:
        await callback(task)
    except Exception:
        log.exception(
            "async state-change callback failed for task %s",
            task.id,
            extra={"task_id": task.id, "task_type": task.type},
        )
