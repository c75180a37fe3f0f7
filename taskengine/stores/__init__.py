"""Persistence backends behind the ``TaskStore`` protocol (``stores/base.py``)."""

from __future__ import annotations

from taskengine.stores.base import StoreCapabilities, TaskStore
from taskengine.stores.memory.store import MemoryStore
from taskengine.stores.sqlite.store import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "StoreCapabilities", "TaskStore"]
