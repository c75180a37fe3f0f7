"""The statuses of a task and the directions of a sort: the enumerations the other rules share."""

from __future__ import annotations

import enum

__all__ = ["SortDirection", "TaskStatus"]


class TaskStatus(enum.StrEnum):
    """Where a task is in its life (contract.md#transitions)."""

    #: Waiting for its first or next attempt.
    PENDING = "pending"
    #: An attempt is running on a worker.
    PROCESSING = "processing"
    #: The handler returned; ``result`` is set.
    SUCCESS = "success"
    #: The last attempt failed and no retries remain.
    FAILED = "failed"
    #: Cancelled before or (with ``terminate=True``) during an attempt.
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for success, failed and cancelled."""
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED})


class SortDirection(enum.StrEnum):
    """Direction of a query's sort."""

    #: Oldest / smallest first.
    ASCENDING = "asc"
    #: Newest / largest first.
    DESCENDING = "desc"

    def __str__(self) -> str:
        return self.value
