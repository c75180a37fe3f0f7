"""The periodic task scheduler (``TaskScheduler``): fire times, slots shared through a store,
and the callbacks it runs.
"""

from __future__ import annotations

from taskengine.scheduler.task_scheduler import TaskScheduler
from taskengine.scheduler.times import ScheduledTaskInfo, ScheduledTaskTime

__all__ = ["ScheduledTaskInfo", "ScheduledTaskTime", "TaskScheduler"]
