"""Handler registrations: which module and function run each task type, and how its pool behaves.

The coordinator never imports a handler module (contract.md#engine): it only checks that the module
can be found, and the worker imports it.  Handlers are looked up by task type only, never by a
module or function named in stored data.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

from taskengine.core import errors, validation
from taskengine.core.handlers import HandlerSpec

__all__ = ["make_spec"]


def _find_module(module: str) -> None:
    """Check that ``module`` can be imported, without importing it or its parent packages.

    ``importlib.util.find_spec("pkg.mod")`` would run ``pkg/__init__.py`` in the coordinator;
    walking the path finders level by level only looks at the file system.
    """
    search: list[str] | None = None
    name = ""
    for part in module.split("."):
        name = f"{name}.{part}" if name else part
        loaded = sys.modules.get(name)
        found: Any
        if loaded is not None:
            found = getattr(loaded, "__spec__", None)
        else:
            try:
                found = importlib.machinery.PathFinder.find_spec(name, search)
            except KeyError:
                # A namespace package inside a namespace package that is not imported: CPython
                # looks the parent up in sys.modules.  Its portions are plain directories.
                portions = [os.path.join(p, part) for p in search or sys.path]
                search = [p for p in portions if os.path.isdir(p)]
                if not search:
                    raise errors.HandlerNotFoundError(
                        f"handler module {module!r} cannot be found"
                    ) from None
                continue
            if found is None and search is None:
                found = importlib.util.find_spec(name)  # built-in and frozen top-level modules
        if found is None:
            raise errors.HandlerNotFoundError(f"handler module {module!r} cannot be found")
        locations = getattr(found, "submodule_search_locations", None)
        search = None if locations is None else list(locations)


def make_spec(
    task_type: object,
    module: object,
    method: object,
    state_change_callback: object,
    *,
    max_worker_count: object,
    idle_shutdown_timeout: object,
    initialise_method: object,
    shutdown_method: object,
    execution_timeout: object,
    max_tasks_per_worker: object,
    max_memory_per_worker: object,
) -> HandlerSpec:
    """Validate ``register_handler``'s arguments and check the module can be found."""
    checked_type = validation.check_identifier_text("task_type", task_type)
    checked_module = validation.check_module_path(module)
    checked_method = validation.check_handler_name("method", method)
    if state_change_callback is not None and not callable(state_change_callback):
        raise errors.TaskValidationError(
            "state_change_callback", state_change_callback, "expected a callable or None"
        )
    if max_worker_count is None:
        workers = os.cpu_count() or 1
    else:
        count = validation.check_optional_positive_int("max_worker_count", max_worker_count)
        assert count is not None
        workers = count
    spec = HandlerSpec(
        task_type=checked_type,
        module=checked_module,
        method=checked_method,
        state_change_callback=state_change_callback,
        max_worker_count=workers,
        idle_shutdown_timeout=validation.check_duration(
            "idle_shutdown_timeout", idle_shutdown_timeout, nullable=True
        ),
        initialise_method=None
        if initialise_method is None
        else validation.check_handler_name("initialise_method", initialise_method),
        shutdown_method=None
        if shutdown_method is None
        else validation.check_handler_name("shutdown_method", shutdown_method),
        execution_timeout=validation.check_duration(
            "execution_timeout", execution_timeout, nullable=True, positive=True
        ),
        max_tasks_per_worker=validation.check_optional_positive_int(
            "max_tasks_per_worker", max_tasks_per_worker
        ),
        max_memory_per_worker=validation.check_optional_positive_int(
            "max_memory_per_worker", max_memory_per_worker
        ),
    )
    _find_module(checked_module)
    return spec
