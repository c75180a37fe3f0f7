"""The periodic task scheduler: fire times, slots shared through a store, and its callbacks."""

from __future__ import annotations

from taskengine.scheduler.task_scheduler import TaskScheduler
from taskengine.scheduler.times import ScheduledTaskInfo, ScheduledTaskTime

__all__ = ["ScheduledTaskInfo", "ScheduledTaskTime", "TaskScheduler"]
