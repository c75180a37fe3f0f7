"""The public contract of the engine as ``Protocol`` classes, sync and async.

``BackgroundTaskConnector`` is what ``TaskEngine`` offers; ``AsyncBackgroundTaskConnector`` is
the same contract with every method a coroutine, what ``AsyncTaskEngine`` offers.  Code that
only needs to create and inspect tasks (a web handler, a CLI command) can depend on a protocol
instead of an engine class, and tests can pass any object that satisfies it.  The two protocols
list the same methods with the same parameters; ``tests/typecheck`` holds them, and each engine
against its protocol, under ``mypy --strict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from taskengine.core import handlers, models

__all__ = ["AsyncBackgroundTaskConnector", "BackgroundTaskConnector"]


@runtime_checkable
class BackgroundTaskConnector(Protocol):
    """The methods of contract.md#engine (TWIN ``IBackgroundTaskConnector``)."""

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
        """Run tasks of ``task_type`` with ``module.method`` in worker processes."""
        ...

    def unregister_handler(self, task_type: str) -> None:
        """Drop a handler; its pending tasks wait."""
        ...

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
        """Store a new task and return its id."""
        ...

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
        """Store many tasks in one batch."""
        ...

    def get(self, task_id: str) -> models.BackgroundTask | None:
        """A task's record, or None."""
        ...

    def wait(self, task_id: str, timeout: float | timedelta | None = None) -> models.BackgroundTask:
        """Block until the task is finished."""
        ...

    def retry(self, task_id: str) -> bool:
        """Run a waiting task now, or revive a failed one."""
        ...

    def cancel(self, task_id: str, *, terminate: bool = False) -> bool:
        """Cancel a pending (or, with terminate, a processing) task."""
        ...

    def remove(self, task_id: str) -> bool:
        """Delete a task whatever its status."""
        ...

    def query(
        self,
        task_type: str | None = None,
        status: models.TaskStatus | str | None = None,
        sort_property: str = "date_created",
        sort_direction: models.SortDirection | str = "asc",
        cursor: str | None = None,
        page_size: int = 20,
    ) -> models.QueryResult:
        """One page of tasks."""
        ...


@runtime_checkable
class AsyncBackgroundTaskConnector(Protocol):
    """:class:`BackgroundTaskConnector` for asyncio code: the same methods, each a coroutine.

    ``AsyncTaskEngine`` satisfies it; its signatures match the sync protocol's parameter for
    parameter (checked by ``tests/typecheck``).
    """

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
        """Run tasks of ``task_type`` with ``module.method`` in worker processes."""
        ...

    async def unregister_handler(self, task_type: str) -> None:
        """Drop a handler; its pending tasks wait."""
        ...

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
        """Store a new task and return its id."""
        ...

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
        """Store many tasks in one batch."""
        ...

    async def get(self, task_id: str) -> models.BackgroundTask | None:
        """A task's record, or None."""
        ...

    async def wait(
        self, task_id: str, timeout: float | timedelta | None = None
    ) -> models.BackgroundTask:
        """Wait (without blocking the loop) until the task is finished."""
        ...

    async def retry(self, task_id: str) -> bool:
        """Run a waiting task now, or revive a failed one."""
        ...

    async def cancel(self, task_id: str, *, terminate: bool = False) -> bool:
        """Cancel a pending (or, with terminate, a processing) task."""
        ...

    async def remove(self, task_id: str) -> bool:
        """Delete a task whatever its status."""
        ...

    async def query(
        self,
        task_type: str | None = None,
        status: models.TaskStatus | str | None = None,
        sort_property: str = "date_created",
        sort_direction: models.SortDirection | str = "asc",
        cursor: str | None = None,
        page_size: int = 20,
    ) -> models.QueryResult:
        """One page of tasks."""
        ...
