"""taskengine: a multiprocess background-task engine with a durable task table.

Handlers named by module path run in per-type pools of worker processes; the coordinator (in
your process) keeps the task table in a pluggable store: ``MemoryStore``, ``SqliteStore`` (the
embedded durable default) or ``PostgresStore`` (several nodes, one table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskengine.aio import AsyncTaskEngine
from taskengine.coordinator.engine import TaskEngine
from taskengine.coordinator.stats import EngineStats, TypeStats
from taskengine.core.connector import AsyncBackgroundTaskConnector, BackgroundTaskConnector
from taskengine.core.context import TaskContext, current_task
from taskengine.core.errors import (
    EngineStoppedError,
    HandlerNotFoundError,
    SchemaVersionError,
    StoreError,
    TaskEngineError,
    TaskNotFoundError,
    TaskTimeoutError,
    TaskValidationError,
    WorkerCrashedError,
    WorkerInitError,
)
from taskengine.core.models import BackgroundTask, QueryResult, SortDirection, TaskError, TaskStatus
from taskengine.scheduler.task_scheduler import ScheduledTaskInfo, ScheduledTaskTime, TaskScheduler
from taskengine.stores.memory.store import MemoryStore
from taskengine.stores.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from taskengine.stores.postgres.store import PostgresStore

__version__ = "0.1.0"

__all__ = [
    "AsyncBackgroundTaskConnector",
    "AsyncTaskEngine",
    "BackgroundTask",
    "BackgroundTaskConnector",
    "EngineStats",
    "EngineStoppedError",
    "HandlerNotFoundError",
    "MemoryStore",
    "PostgresStore",
    "QueryResult",
    "ScheduledTaskInfo",
    "ScheduledTaskTime",
    "SchemaVersionError",
    "SortDirection",
    "SqliteStore",
    "StoreError",
    "TaskContext",
    "TaskEngine",
    "TaskEngineError",
    "TaskError",
    "TaskNotFoundError",
    "TaskScheduler",
    "TaskStatus",
    "TaskTimeoutError",
    "TaskValidationError",
    "TypeStats",
    "WorkerCrashedError",
    "WorkerInitError",
    "current_task",
]


def __getattr__(name: str) -> Any:
    # PostgresStore needs the optional psycopg driver: resolve it only when asked for, so that
    # `import taskengine` never imports psycopg.
    if name == "PostgresStore":
        from taskengine.stores.postgres import store as postgres

        return postgres.PostgresStore
    raise AttributeError(f"module 'taskengine' has no attribute {name!r}")
