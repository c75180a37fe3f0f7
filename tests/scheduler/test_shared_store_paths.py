"""Schedulers sharing one schedule store: other times, removal elsewhere, store failures."""

from __future__ import annotations

import logging
from datetime import timedelta

from taskengine import ScheduledTaskTime, StoreError, TaskScheduler
from taskengine.core.clock import FakeClock
from taskengine.stores.memory.schedules import MemoryScheduleStore

from .conftest import START


def at(seconds: float):
    return START + timedelta(seconds=seconds)


def pair(store, clock):
    return TaskScheduler(store, clock=clock).start(), TaskScheduler(store, clock=clock).start()


def step(clock, schedulers, seconds=1):
    clock.advance(seconds)
    for scheduler in schedulers:
        scheduler.wait_idle()


def test_a_node_with_other_times_stands_aside_while_they_differ(caplog):
    clock, store = FakeClock(START), MemoryScheduleStore()
    a, b = pair(store, clock)
    old, new = [], []
    try:
        a.add_task("x", ScheduledTaskTime(interval_seconds=1), old.append)
        b.add_task("x", ScheduledTaskTime(interval_seconds=2), new.append)  # replaces the row
        with caplog.at_level(logging.WARNING, logger="taskengine.scheduler"):
            for _ in range(4):
                step(clock, (a, b))
    finally:
        a.stop()
        b.stop()
    assert old == []
    assert new == [at(2), at(4)]
    assert any("other times" in r.getMessage() for r in caplog.records)


def test_a_schedule_removed_through_another_scheduler_is_stored_again_by_one_that_has_it():
    clock, store = FakeClock(START), MemoryScheduleStore()
    a, b = pair(store, clock)
    fired = []
    try:
        a.add_task("x", ScheduledTaskTime(interval_seconds=1), fired.append)
        b.add_task("x", ScheduledTaskTime(interval_seconds=1), fired.append)
        step(clock, (a, b))
        assert b.remove_task("x") is True
        assert store.get("x") is None
        step(clock, (a, b))  # a finds the row gone: stores it again, skipping this slot
        step(clock, (a, b))
    finally:
        a.stop()
        b.stop()
    assert fired == [at(1), at(3)]
    assert store.get("x") is not None


class FlakyStore(MemoryScheduleStore):
    """Fails the first ``failures`` compare-and-sets as a lost connection would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def compare_and_set(self, expected, new):
        if self.failures:
            self.failures -= 1
            raise StoreError("connection lost")
        return super().compare_and_set(expected, new)


def test_a_store_error_is_logged_and_the_slot_is_tried_again(caplog):
    clock, store = FakeClock(START), FlakyStore(failures=1)
    fired = []
    with TaskScheduler(store, clock=clock) as scheduler:
        scheduler.add_task("x", ScheduledTaskTime(interval_seconds=10), fired.append)
        with caplog.at_level(logging.ERROR, logger="taskengine.scheduler"):
            step(clock, (scheduler,), 10)
        assert fired == []
        assert any("cannot claim" in r.getMessage() for r in caplog.records)
        step(clock, (scheduler,), 1)  # retried a second later: the slot is not lost
        assert fired == [at(10)]
        step(clock, (scheduler,), 9)
        assert fired == [at(10), at(20)]
