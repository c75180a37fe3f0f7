"""Persistence backends behind the ``TaskStore`` protocol (``stores/base.py``)."""

from __future__ import annotations

from taskengine.stores.base import StoreCapabilities, TaskStore
from taskengine.stores.memory import MemoryStore
from taskengine.stores.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "StoreCapabilities", "TaskStore"]
