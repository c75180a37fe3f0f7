"""The PostgreSQL backend (psycopg 3, the ``postgres`` extra): several nodes share one table.

``PostgresStore`` imports psycopg only when a store is opened; ``PgScheduleStore`` imports it
when first named here, so that importing this package never requires the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskengine.stores.postgres.store import PostgresStore

if TYPE_CHECKING:
    from taskengine.stores.postgres.schedules import PgScheduleStore

__all__ = ["PgScheduleStore", "PostgresStore"]


def __getattr__(name: str) -> Any:
    if name == "PgScheduleStore":
        from taskengine.stores.postgres import schedules

        return schedules.PgScheduleStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
