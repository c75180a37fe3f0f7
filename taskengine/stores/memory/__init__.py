"""The in-memory backend: tasks live as long as the process."""

from __future__ import annotations

from taskengine.stores.memory.store import MemoryStore

__all__ = ["MemoryStore"]
