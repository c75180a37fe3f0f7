"""Which schedule store a ``TaskScheduler`` uses for what it was given."""

from __future__ import annotations

from taskengine.core import errors
from taskengine.stores import base
from taskengine.stores.memory.schedules import MemoryScheduleStore
from taskengine.stores.schedules import ScheduleStore
from taskengine.stores.sqlite.schedules import SqliteScheduleStore
from taskengine.stores.sqlite.store import SqliteStore

__all__ = ["for_target"]


def for_target(target: object) -> tuple[ScheduleStore, bool]:
    """The schedule store for what ``TaskScheduler`` was given, and whether the scheduler owns it.

    ``None`` or a non-durable task store: a new ``MemoryScheduleStore``.  A ``SqliteStore``: its
    file's ``schedules`` table.  A shared store with ``dsn`` and ``schema`` (``PostgresStore``):
    a ``PgScheduleStore`` on that schema.  An engine: the same for its ``store``.  A
    ``ScheduleStore``: itself (not owned: the caller closes it).

    Raises:
        TaskValidationError: the target is none of these, or a durable store of a kind that
            has no schedule store.
    """
    if target is None:
        return MemoryScheduleStore(), True
    if isinstance(target, ScheduleStore):
        return target, False
    store = getattr(target, "store", None) if not isinstance(target, base.TaskStore) else target
    if not isinstance(store, base.TaskStore):
        raise errors.TaskValidationError(
            "engine_or_store", target, "expected a TaskEngine, a task store or a ScheduleStore"
        )
    if isinstance(store, SqliteStore):
        return SqliteScheduleStore(store.path), True
    dsn, pg_schema = getattr(store, "dsn", None), getattr(store, "schema", None)
    if store.capabilities.shared and isinstance(dsn, str) and isinstance(pg_schema, str):
        from taskengine.stores.postgres.schedules import PgScheduleStore

        return PgScheduleStore(dsn, pg_schema), True
    if not store.capabilities.durable:
        return MemoryScheduleStore(), True
    raise errors.TaskValidationError(
        "engine_or_store", target, "this durable store has no schedule store; pass a ScheduleStore"
    )
