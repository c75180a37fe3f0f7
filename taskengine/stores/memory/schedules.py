"""``MemoryScheduleStore``: a scheduler's slots in this process (``stores/schedules.py``)."""

from __future__ import annotations

import threading
from datetime import datetime

from taskengine.stores import base
from taskengine.stores.schedules import ScheduleRecord

__all__ = ["MemoryScheduleStore"]


class MemoryScheduleStore:
    """Schedule slots in a dictionary of this process: not durable, thread-safe.

    Several schedulers in one process given the same instance fire each slot once between them.
    """

    def __init__(self) -> None:
        self._records: dict[str, ScheduleRecord] = {}
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Neither durable nor shared between processes."""
        return base.StoreCapabilities(durable=False, shared=False)

    def open(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to close; the records stay for another scheduler in this process."""

    def now(self) -> datetime | None:
        """None: the scheduler's clock is the time."""
        return None

    def get(self, schedule_id: str) -> ScheduleRecord | None:
        """The stored record, or None."""
        with self._lock:
            return self._records.get(schedule_id)

    def insert_or_get(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store ``record`` unless the id is stored; return the stored record."""
        with self._lock:
            return self._records.setdefault(record.schedule_id, record)

    def replace(self, record: ScheduleRecord) -> None:
        """Store ``record`` over whatever is stored."""
        with self._lock:
            self._records[record.schedule_id] = record

    def compare_and_set(self, expected: ScheduleRecord, new: ScheduleRecord) -> bool:
        """Store ``new`` if the stored record has ``expected``'s times and next slot."""
        with self._lock:
            stored = self._records.get(expected.schedule_id)
            if (
                stored is None
                or stored.times_key != expected.times_key
                or stored.next_trigger != expected.next_trigger
            ):
                return False
            self._records[expected.schedule_id] = new
            return True

    def delete(self, schedule_id: str) -> bool:
        """Forget a schedule."""
        with self._lock:
            return self._records.pop(schedule_id, None) is not None
