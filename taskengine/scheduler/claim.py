"""Consuming one due slot in a schedule store: the step every firing takes before its callback.

It runs in a callback thread, never on the timing thread, because it talks to the store.
"""

from __future__ import annotations

import logging
from datetime import datetime

import attrs

from taskengine.core import clock as clocks
from taskengine.scheduler import times as times_
from taskengine.scheduler.times import ScheduledTaskTime
from taskengine.stores import schedules

__all__ = ["claim_slot"]

log = logging.getLogger("taskengine.scheduler")


def claim_slot(
    store: schedules.ScheduleStore,
    clock: clocks.Clock,
    times: tuple[ScheduledTaskTime, ...],
    record: schedules.ScheduleRecord,
) -> tuple[bool, schedules.ScheduleRecord, datetime | None]:
    """Try to consume ``record``'s due slot.

    Returns:
        (whether this caller won the slot and must fire it, the record to keep, and a time of
        the scheduler's clock at which to look again instead of the record's next slot).

    Raises:
        StoreError: the store failed; nothing was consumed, or it is unknown (the caller tries
            again later; the compare-and-set never consumes a slot twice).
    """
    due = record.next_trigger
    local_now = clock.now()
    store_now = store.now()
    now = store_now or local_now
    if due is None:
        return False, record, None
    if due > now:
        # Not due by the store's clock (this node's clock is ahead): look again then.
        return False, record, local_now + (due - now)
    new = attrs.evolve(record, slots=times_.advance(times, record.slots, now))
    if store.compare_and_set(record, new):
        return True, new, None
    stored = store.get(record.schedule_id)
    if stored is None:
        # Removed through another scheduler while this one still has it: store it again.
        return False, store.insert_or_get(new), None
    if stored.times_key != record.times_key or len(stored.slots) != len(times):
        log.warning(
            "schedule %r is stored with other times (another node added it differently); "
            "this scheduler does not fire it while they differ",
            record.schedule_id,
        )
        return False, new, None
    return False, stored, None  # another scheduler fired this slot
