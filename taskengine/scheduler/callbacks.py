"""How ``TaskScheduler`` calls a callback, and the helper that schedules engine tasks.

A callback takes no argument, or one: the due time (aware UTC datetime) of the slot it fires
for.  An ``async def`` callback (or any callback returning a coroutine) is run to completion
with ``asyncio.run`` in the callback thread, on an event loop of its own: it never shares a loop
with the application, and it cannot block the timing thread.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from taskengine.core import errors, validation

if TYPE_CHECKING:
    from taskengine.core.connector import BackgroundTaskConnector

__all__ = ["Invoker", "make_invoker", "task_creating_callback"]


@attrs.frozen
class Invoker:
    """A validated callback and whether it is given the due time."""

    callback: Callable[..., Any]
    wants_slot: bool

    def __call__(self, slot: datetime) -> None:
        """Call the callback (awaiting a coroutine it returns) and let its exception through."""
        result = self.callback(slot) if self.wants_slot else self.callback()
        if inspect.isawaitable(result):
            asyncio.run(_await(result))


async def _await(awaitable: Any) -> None:
    await awaitable


def make_invoker(callback: object) -> Invoker:
    """Check that ``callback`` can be called with no argument or with the due time.

    Raises:
        TaskValidationError: it is not callable, or needs other arguments.
    """
    if not callable(callback):
        raise errors.TaskValidationError(
            "callback", callback, f"expected a callable, got {type(callback).__name__}"
        )
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return Invoker(callback, wants_slot=False)  # a builtin without a signature: no argument
    try:
        signature.bind()
    except TypeError:
        pass
    else:
        return Invoker(callback, wants_slot=False)
    try:
        signature.bind(None)
    except TypeError:
        raise errors.TaskValidationError(
            "callback", callback, "must accept no argument, or one (the due time)"
        ) from None
    return Invoker(callback, wants_slot=True)


def task_creating_callback(
    engine: BackgroundTaskConnector, task_type: str, payload: Any = None, **options: Any
) -> Callable[[], str]:
    """A callback that creates one background task per firing (``engine.create``).

    Args:
        engine: the engine that stores and runs the tasks.
        task_type: the type of the task to create.
        payload: the payload of each task (``create`` copies it every time).
        **options: further keyword arguments of ``TaskEngine.create`` (``retry_count``,
            ``retry_interval``, ``retain_for``, ``run_at``, ``idempotency_key``).

    Returns:
        A callback returning the new task's id.

    Raises:
        TaskValidationError: ``engine`` has no ``create``, ``task_type`` is not a valid type, or
            an option is not an argument of ``create``.
    """
    create = getattr(engine, "create", None)
    if not callable(create):
        raise errors.TaskValidationError("engine", engine, "expected a TaskEngine")
    validation.check_identifier_text("task_type", task_type)
    try:
        inspect.signature(create).bind(task_type, payload, **options)
    except TypeError as exc:
        raise errors.TaskValidationError("options", options, str(exc)) from exc

    def create_task() -> str:
        task_id: str = create(task_type, payload, **options)
        return task_id

    return create_task
