"""``engine.stats()``: one snapshot of the task table and of this node's worker pools.

The counts come from the store (``TaskStore.count_tasks``), so they describe the whole table,
whoever dispatches from it.  The pool figures (workers, attempts done, failures, run time) come
from this engine's reactor and describe only the pools of *this* process: an engine that was not
started (the ``taskengine tasks``/``stats`` commands, a web service that only creates tasks) has
no pools and reports zeros there.  This module only assembles the snapshot; it reads nothing
itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

from taskengine.core import jsonform, models
from taskengine.pool import pool
from taskengine.stores import base

__all__ = ["EngineStats", "TypeStats", "build"]

Status = models.TaskStatus


@attrs.frozen(kw_only=True)
class TypeStats:
    """Figures of one task type.

    Attributes:
        task_type: the type.
        pending: visible tasks in status pending (due or not).
        processing: tasks with an attempt running (on any node).
        success: finished tasks that succeeded and are still retained.
        failed: finished tasks that failed and are still retained.
        cancelled: cancelled tasks still retained.
        attempts: the sum of ``attempts`` over the visible tasks of the type.
        oldest_pending_age: seconds the longest-waiting *due* pending task has been due (None
            when no pending task is due); a growing value means the pool cannot keep up.
        is_registered: this engine has a handler (and so a pool) for the type.
        workers_alive: worker processes of this engine's pool (starting, idle or busy).
        workers_busy: those running an attempt.
        max_worker_count: the pool's limit (0 when the type has no pool here).
        tasks_done: attempts this engine's pool finished since it started (success or error).
        failures: those of them that ended with the handler's error.
        crashes: attempts that ended with the worker dying (crash, timeout, termination).
        mean_run_time: mean seconds per finished attempt of this pool (None before the first).
    """

    task_type: str
    pending: int = 0
    processing: int = 0
    success: int = 0
    failed: int = 0
    cancelled: int = 0
    attempts: int = 0
    oldest_pending_age: float | None = None
    is_registered: bool = False
    workers_alive: int = 0
    workers_busy: int = 0
    max_worker_count: int = 0
    tasks_done: int = 0
    failures: int = 0
    crashes: int = 0
    mean_run_time: float | None = None

    def count(self, status: models.TaskStatus | str) -> int:
        """The number of tasks of the type in ``status``."""
        value: int = getattr(self, Status(status).value)
        return value

    @property
    def total(self) -> int:
        """Visible tasks of the type, whatever their status."""
        return sum(self.count(status) for status in Status)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (camelCase names, seconds as floats)."""
        return {
            "type": self.task_type,
            **{status.value: self.count(status) for status in Status},
            "attempts": self.attempts,
            "oldestPendingAge": self.oldest_pending_age,
            "isRegistered": self.is_registered,
            "workersAlive": self.workers_alive,
            "workersBusy": self.workers_busy,
            "maxWorkerCount": self.max_worker_count,
            "tasksDone": self.tasks_done,
            "failures": self.failures,
            "crashes": self.crashes,
            "meanRunTime": self.mean_run_time,
        }


@attrs.frozen(kw_only=True)
class EngineStats:
    """A snapshot returned by ``TaskEngine.stats()``.

    Attributes:
        node_identity: the engine that took it.
        date_taken: when (aware UTC, millisecond precision).
        is_dispatching: the engine was started (its pool figures are live) and not stopped.
        types: one entry per task type that has visible tasks or a registration, by type name.
    """

    node_identity: str
    date_taken: datetime
    is_dispatching: bool
    types: tuple[TypeStats, ...] = ()

    def of(self, task_type: str) -> TypeStats:
        """The figures of ``task_type`` (all zero for a type the snapshot does not list)."""
        for entry in self.types:
            if entry.task_type == task_type:
                return entry
        return TypeStats(task_type=task_type)

    def count(self, status: models.TaskStatus | str) -> int:
        """Tasks of every type in ``status``."""
        return sum(entry.count(status) for entry in self.types)

    @property
    def oldest_pending_age(self) -> float | None:
        """The largest ``oldest_pending_age`` over every type (None when nothing is due)."""
        ages = [e.oldest_pending_age for e in self.types if e.oldest_pending_age is not None]
        return max(ages, default=None)

    @property
    def attempts(self) -> int:
        """The sum of ``attempts`` over every visible task."""
        return sum(entry.attempts for entry in self.types)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form used by ``taskengine stats --json``."""
        return {
            "nodeIdentity": self.node_identity,
            "dateTaken": jsonform.format_date(self.date_taken),
            "isDispatching": self.is_dispatching,
            "totals": {status.value: self.count(status) for status in Status},
            "attempts": self.attempts,
            "oldestPendingAge": self.oldest_pending_age,
            "types": [entry.to_json() for entry in self.types],
        }


def build(
    *,
    node_identity: str,
    now: datetime,
    counts: Iterable[base.TaskCount],
    pool_facts: Mapping[str, pool.PoolFacts],
    registered: Iterable[str],
    is_dispatching: bool,
) -> EngineStats:
    """Assemble a snapshot from the store's counts and the reactor's pool facts."""
    fields: dict[str, dict[str, Any]] = {}

    def entry(task_type: str) -> dict[str, Any]:
        return fields.setdefault(task_type, {"task_type": task_type})

    for row in counts:
        values = entry(row.task_type)
        values[row.status.value] = row.count
        values["attempts"] = values.get("attempts", 0) + row.attempts
        due = row.earliest_next_process
        if row.status is Status.PENDING and due is not None and due <= now:
            values["oldest_pending_age"] = (now - due).total_seconds()
    for task_type in registered:
        entry(task_type)["is_registered"] = True
    for task_type, facts in pool_facts.items():
        values = entry(task_type)
        done = facts.tasks_done
        values.update(
            is_registered=True,
            workers_alive=facts.alive,
            workers_busy=facts.busy,
            max_worker_count=facts.max_worker_count,
            tasks_done=done,
            failures=facts.failures,
            crashes=facts.crashes,
            mean_run_time=facts.run_seconds_total / done if done else None,
        )
    return EngineStats(
        node_identity=node_identity,
        date_taken=now,
        is_dispatching=is_dispatching,
        types=tuple(TypeStats(**fields[name]) for name in sorted(fields)),
    )
