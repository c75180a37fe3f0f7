"""What a registered handler is: ``HandlerSpec``, the validated form of ``register_handler``.

The coordinator builds one per task type (``coordinator/registry.py`` validates the arguments
and checks the module can be found); the pool starts and feeds worker processes from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from taskengine.core import models

__all__ = ["HandlerSpec", "StateChangeCallback"]

StateChangeCallback = Callable[[models.BackgroundTask], Any]


@attrs.frozen(kw_only=True)
class HandlerSpec:
    """One task type's registration (validated)."""

    task_type: str
    module: str
    method: str
    state_change_callback: StateChangeCallback | None
    max_worker_count: int
    idle_shutdown_timeout: float | None
    initialise_method: str | None
    shutdown_method: str | None
    execution_timeout: float | None
    max_tasks_per_worker: int | None
    max_memory_per_worker: int | None
