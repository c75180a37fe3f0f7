"""The SQLite backend, the embedded durable default (stdlib ``sqlite3``)."""

from __future__ import annotations

from taskengine.stores.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
