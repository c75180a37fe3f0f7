"""The schedule store: where ``TaskScheduler`` keeps each schedule's next slots.

A schedule's record is its id, the fingerprint of its times and one pending slot per time.
Every firing is a compare-and-set: a node fires a slot only if it moved the stored record from
the slots it read to the slots after the firing, so among all schedulers sharing a store each
slot fires once.  The slot is consumed *before* the callback runs: a process that dies in a
callback neither blocks later slots nor repeats that one after a restart.

Implementations live with their backends: ``stores.memory.schedules.MemoryScheduleStore``
(in-process), ``stores.sqlite.schedules.SqliteScheduleStore`` (the ``schedules`` table of a
``SqliteStore`` file) and ``stores.postgres.schedules.PgScheduleStore`` (``pg_schedules``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from taskengine.core import clock, errors
from taskengine.stores import base

__all__ = [
    "ScheduleRecord",
    "ScheduleStore",
    "compare_and_set_parameters",
    "decode_slots",
    "encode_slots",
    "record_row",
]


@attrs.frozen(kw_only=True)
class ScheduleRecord:
    """The stored state of one schedule.

    Attributes:
        schedule_id: the id given to ``add_task``.
        times_key: ``scheduler.times.fingerprint`` of its times.
        slots: the next due time of each of its times (None: that one-shot has fired).
    """

    schedule_id: str
    times_key: str
    slots: tuple[datetime | None, ...]

    @property
    def next_trigger(self) -> datetime | None:
        """The earliest pending slot (the one the compare-and-set is keyed on)."""
        pending = [slot for slot in self.slots if slot is not None]
        return min(pending) if pending else None


def encode_slots(slots: tuple[datetime | None, ...]) -> str:
    """The JSON text of slots as integer milliseconds (null for a fired one-shot)."""
    return json.dumps([None if s is None else clock.to_millis(s) for s in slots])


def decode_slots(text: str) -> tuple[datetime | None, ...]:
    """The slots of ``encode_slots`` text.

    Raises:
        StoreError: the text is not a list of integers and nulls.
    """
    try:
        values = json.loads(text)
        if not isinstance(values, list) or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values
        ):
            raise ValueError("expected a list of integers and nulls")
        return tuple(None if v is None else clock.from_millis(v) for v in values)
    except (ValueError, OverflowError) as exc:
        raise errors.StoreError(f"undecodable schedule slots {text[:80]!r}: {exc}") from exc


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else clock.to_millis(moment)


def record_row(record: ScheduleRecord) -> tuple[object, ...]:
    """The values of a SQL store's ``(id, times_key, slots, next_trigger)`` columns."""
    return (
        record.schedule_id,
        record.times_key,
        encode_slots(record.slots),
        _ms(record.next_trigger),
    )


def compare_and_set_parameters(expected: ScheduleRecord, new: ScheduleRecord) -> tuple[object, ...]:
    """The parameters of a SQL store's compare-and-set statement.

    The new slot's values first, then the fence: the id, the times key and the slot read.
    """
    return (
        _ms(new.next_trigger),
        encode_slots(new.slots),
        new.times_key,
        expected.schedule_id,
        expected.times_key,
        _ms(expected.next_trigger),
    )


@runtime_checkable
class ScheduleStore(Protocol):
    """A persistence backend for schedule slots.  Every method is atomic."""

    @property
    def capabilities(self) -> base.StoreCapabilities:
        """Whether slots survive a restart (durable) and are shared between nodes."""
        ...

    def open(self) -> None:
        """Connect and create the table if needed; calling it again does nothing."""
        ...

    def close(self) -> None:
        """Release connections; calling it again does nothing."""
        ...

    def now(self) -> datetime | None:
        """The store's own current time (a database's), or None to use the scheduler's clock."""
        ...

    def get(self, schedule_id: str) -> ScheduleRecord | None:
        """The stored record, or None."""
        ...

    def insert_or_get(self, record: ScheduleRecord) -> ScheduleRecord:
        """Store ``record`` unless the id is stored; return the stored record either way."""
        ...

    def replace(self, record: ScheduleRecord) -> None:
        """Store ``record`` whatever is stored under its id (its times changed)."""
        ...

    def compare_and_set(self, expected: ScheduleRecord, new: ScheduleRecord) -> bool:
        """Store ``new`` only if the stored record still has ``expected``'s times and next slot."""
        ...

    def delete(self, schedule_id: str) -> bool:
        """Forget a schedule; whether there was one."""
        ...
