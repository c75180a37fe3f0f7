"""A small dict-based reference model of the task life cycle, written apart from transitions.py.

Each task is a plain record; each method below is one row of the status table of
contract.md#transitions, in the words of that page, so that the engine is
checked against the text and not against its own code.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import attrs

from taskengine.core import clock

#: The state-change callback paths contract.md#transitions allows (a fresh task starts pending).
ALLOWED_STEPS = {
    ("pending", "processing"),
    ("pending", "cancelled"),
    ("processing", "success"),
    ("processing", "pending"),
    ("processing", "failed"),
    ("processing", "cancelled"),
    ("failed", "pending"),
}
ERROR_OF = {"fail": "ValueError", "crash": "WorkerCrashedError", "timeout": "TaskTimeoutError"}


def later(moment: datetime, seconds: float) -> datetime:
    return clock.truncate_to_millis(moment + timedelta(seconds=seconds))


@attrs.define
class ModelTask:
    id: str
    type: str
    plan: list[str]
    retry_interval: float
    retain_for: float | None
    date_created: datetime
    date_next_process: datetime | None
    retries_remaining: int | None
    status: str = "pending"
    attempts: int = 0
    date_completed: datetime | None = None
    date_cancelled: datetime | None = None
    date_retain_until: datetime | None = None
    error_type: str | None = None
    result: Any = None
    gone: bool = False
    path: list[str] = attrs.field(factory=list)

    def step(self) -> str:
        """What the handler does in the next attempt."""
        index = self.attempts  # attempts already started: the next one is attempts + 1
        return self.plan[index] if index < len(self.plan) else "ok"

    def visible(self, now: datetime) -> bool:
        return not self.gone and (self.date_retain_until is None or self.date_retain_until > now)


class Model:
    """The expected task table."""

    def __init__(self) -> None:
        self.tasks: dict[str, ModelTask] = {}

    def add(self, task: ModelTask) -> None:
        self.tasks[task.id] = task

    def live(self, now: datetime) -> Iterator[ModelTask]:
        return (task for task in self.tasks.values() if task.visible(now))

    def get(self, task_id: str, now: datetime) -> ModelTask | None:
        task = self.tasks.get(task_id)
        return task if task is not None and task.visible(now) else None

    # -- finishing and retention ----------------------------------------------------------

    def _finish(self, task: ModelTask, status: str, now: datetime) -> None:
        task.status = status
        task.path.append(status)
        task.date_next_process = None
        if status == "cancelled":
            task.date_cancelled = now
        else:
            task.date_completed = now
        if task.retain_for is None:
            task.date_retain_until = None
        elif task.retain_for == 0:
            task.gone = True  # "0 = delete as soon as the task finishes"
        else:
            task.date_retain_until = later(now, task.retain_for)

    # -- the rows of the table ------------------------------------------------------------

    def due(self, now: datetime, types: set[str]) -> list[ModelTask]:
        """Pending tasks of handled types due at ``now``, in the order the engine takes them."""
        ready = [
            t
            for t in self.tasks.values()
            if not t.gone
            and t.status == "pending"
            and t.type in types
            and t.date_next_process is not None
            and t.date_next_process <= now
        ]
        return sorted(ready, key=lambda t: (t.date_next_process, t.id))

    def claim(self, task: ModelTask) -> None:
        task.status = "processing"
        task.attempts += 1
        task.date_next_process = None
        task.path.append("processing")

    def attempt_failed(self, task: ModelTask, error_type: str, now: datetime) -> None:
        task.error_type = error_type
        if task.retries_remaining == 0:
            self._finish(task, "failed", now)
            return
        if task.retries_remaining is not None:
            task.retries_remaining -= 1
        task.status = "pending"
        task.path.append("pending")
        task.date_next_process = later(now, task.retry_interval)

    def attempt_succeeded(self, task: ModelTask, now: datetime) -> None:
        task.error_type = None
        task.result = task.attempts
        self._finish(task, "success", now)

    def cancel(self, task_id: str, now: datetime, *, terminate: bool) -> bool:
        task = self.get(task_id, now)
        allowed = ("pending", "processing") if terminate else ("pending",)
        if task is None or task.status not in allowed:
            return False
        self._finish(task, "cancelled", now)
        return True

    def retry(self, task_id: str, now: datetime) -> bool:
        task = self.get(task_id, now)
        if task is None or task.status not in ("pending", "failed"):
            return False
        if task.status == "failed":
            task.status = "pending"
            task.path.append("pending")
            task.date_completed = None
            task.date_retain_until = None
        task.date_next_process = now
        return True

    def remove(self, task_id: str, now: datetime) -> bool:
        task = self.get(task_id, now)
        if task is None:
            return False
        task.gone = True
        return True

    # -- running one attempt, as the inline runner or a worker would --------------------

    def run_attempt(self, task: ModelTask, now: datetime, *, timeout_step: float) -> datetime:
        """Claim ``task`` at ``now`` and run its next step; return the time it ended."""
        what = task.step()
        self.claim(task)
        if what == "ok":
            self.attempt_succeeded(task, now)
        elif what in ERROR_OF:
            end = later(now, timeout_step) if what == "timeout" else now
            self.attempt_failed(task, ERROR_OF[what], end)
            return end
        elif what == "cancel_self":
            self._finish(task, "cancelled", now)
        elif what == "remove_self":
            task.gone = True
        elif what == "hang":
            pass  # stays processing until terminated, removed or killed
        else:  # pragma: no cover - a typo in a plan
            raise AssertionError(what)
        return now
