"""PostgresStore: several engine nodes sharing one task table (not built yet).

The class exists so that the public name resolves and says clearly what is missing; the
implementation (psycopg 3, ``SKIP LOCKED`` claims, leases, LISTEN/NOTIFY) is tracked in its own
issue.  Importing this module never imports psycopg.
"""

from __future__ import annotations

from typing import Any

from taskengine import errors

__all__ = ["PostgresStore"]


class PostgresStore:
    """Placeholder for the PostgreSQL store.

    Raises:
        StoreError: always; this release has no PostgreSQL store yet.
    """

    def __init__(self, dsn: str, **options: Any) -> None:
        raise errors.StoreError(
            "PostgresStore is not available in this release of taskengine; "
            "use SqliteStore or MemoryStore"
        )
