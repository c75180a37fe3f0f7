"""``Runner``: what the engine asks of whatever runs its attempts.

Two implement it: ``reactor.Reactor`` (worker processes, driven by the reactor thread) and
``inline.InlineRunner`` (``execution="inline"``: attempts run in the caller's thread when a
test asks).  The engine holds one and never asks which it is, except to offer the inline
runner's ``run_next``/``run_until_idle``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import Protocol, TypeVar

from taskengine.core import handlers
from taskengine.pool import pool

__all__ = ["PoolFacts", "Runner"]

T = TypeVar("T")

#: One pool's figures (re-exported for the engine's statistics).
PoolFacts = pool.PoolFacts


class Runner(Protocol):
    """Runs claimed attempts and reports their outcomes through the engine's writer."""

    def start(self) -> None:
        """Begin running (the reactor starts its thread)."""
        ...

    def stop(self, timeout: float) -> None:
        """Let attempts finish for up to ``timeout`` seconds, then end every worker."""
        ...

    def wake(self) -> None:
        """Look for due work soon (a task was retried, the clock moved, ...)."""
        ...

    def wake_for(self, task_type: str, due: datetime) -> None:
        """A task of ``task_type`` was stored, due at ``due``."""
        ...

    def submit(self, command: Callable[[], T]) -> Future[T]:
        """Run ``command`` where the runner's state may be touched; its outcome arrives later."""
        ...

    def register(self, spec: handlers.HandlerSpec) -> None:
        """Run ``spec.task_type`` with this registration from now on (runner's thread)."""
        ...

    def unregister(self, task_type: str) -> None:
        """Stop running ``task_type``; its pending tasks wait (runner's thread)."""
        ...

    def terminate(self, task_id: str) -> bool:
        """Kill the attempt of ``task_id`` if it runs here (runner's thread)."""
        ...

    def held_task_ids(self) -> set[str] | None:
        """The claims held now (runner's thread); None when none are held between calls."""
        ...

    def pool_facts(self) -> dict[str, PoolFacts]:
        """Each task type's pool figures (runner's thread)."""
        ...
