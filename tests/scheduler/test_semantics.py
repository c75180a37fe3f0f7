"""Scheduler semantics on a fake clock: every assertion is about slots, never about sleeps."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import attrs
import pytest

from taskengine import (
    EngineStoppedError,
    ScheduledTaskTime,
    TaskScheduler,
    TaskValidationError,
)
from taskengine.core.clock import FakeClock

from .conftest import START


def recorder() -> tuple[list, object]:
    fired: list = []
    return fired, fired.append


def test_an_interval_fires_at_each_slot_and_never_before(scheduler, clock):
    fired, record = recorder()
    scheduler.add_task("tick", ScheduledTaskTime(interval_seconds=10), record)
    scheduler.wait_idle()
    assert fired == []  # the first slot is one interval from now
    clock.advance(9.999)
    scheduler.wait_idle()
    assert fired == []
    clock.advance(0.001)
    scheduler.wait_idle()
    assert fired == [START + timedelta(seconds=10)]
    clock.advance(10)
    scheduler.wait_idle()
    assert fired == [START + timedelta(seconds=10), START + timedelta(seconds=20)]


def test_late_firings_do_not_drift(scheduler, clock):
    fired, record = recorder()
    scheduler.add_task("tick", ScheduledTaskTime(interval_seconds=10), record)
    for _ in range(5):
        clock.advance(10.7)  # each firing late by a growing amount below one interval
        scheduler.wait_idle()
    assert fired == [START + timedelta(seconds=10 * k) for k in range(1, 6)]
    assert scheduler.tasks_info().next_triggers["tick"] == START + timedelta(seconds=60)


def test_missed_firings_collapse_into_one(scheduler, clock):
    fired, record = recorder()
    scheduler.add_task("tick", ScheduledTaskTime(interval_seconds=10), record)
    clock.advance(95)  # slots 10, 20, ..., 90 all passed
    scheduler.wait_idle()
    assert fired == [START + timedelta(seconds=10)]
    assert scheduler.tasks_info().next_triggers["tick"] == START + timedelta(seconds=100)
    clock.advance(5)
    scheduler.wait_idle()
    assert fired[-1] == START + timedelta(seconds=100)
    assert len(fired) == 2


def test_one_shot_fires_once_now_or_at_its_time(scheduler, clock):
    fired, record = recorder()
    scheduler.add_task("now", ScheduledTaskTime(), record)
    scheduler.wait_idle()
    assert fired == [START]
    at = START + timedelta(minutes=5)
    scheduler.add_task("later", ScheduledTaskTime(next_trigger_time=at), record)
    clock.advance(3600)
    scheduler.wait_idle()
    assert fired == [START, at]
    info = scheduler.tasks_info()
    assert info.next_triggers == {"now": None, "later": None}
    # Listed until removed (as in TWIN), with no pending slot.
    assert info.tasks == {"now": [ScheduledTaskTime()], "later": [ScheduledTaskTime()]}


def test_explicit_first_time_then_interval(scheduler, clock):
    fired, record = recorder()
    first = START + timedelta(seconds=3)
    scheduler.add_task("t", ScheduledTaskTime(next_trigger_time=first, interval_seconds=60), record)
    clock.advance(3)
    scheduler.wait_idle()
    clock.advance(60)
    scheduler.wait_idle()
    assert fired == [first, first + timedelta(seconds=60)]


def test_cron_fires_at_matches(scheduler, clock):
    fired, record = recorder()
    scheduler.add_task("c", ScheduledTaskTime(cron="*/15 * * * *"), record)
    for _ in range(4):
        clock.advance(15 * 60)
        scheduler.wait_idle()
    assert fired == [START + timedelta(minutes=15 * k) for k in range(1, 5)]
    clock.advance(3 * 3600)  # twelve matches missed: one firing
    scheduler.wait_idle()
    assert len(fired) == 5
    assert scheduler.tasks_info().next_triggers["c"] == START + timedelta(hours=4, minutes=15)


def test_several_times_for_one_id(scheduler, clock):
    fired, record = recorder()
    times = [ScheduledTaskTime(interval_seconds=10), ScheduledTaskTime(interval_seconds=25)]
    scheduler.add_task("multi", times, record)
    for _ in range(6):
        clock.advance(5)
        scheduler.wait_idle()
    # 10, 20 (first), 25 (second), 30 (first): one firing per due moment.
    assert fired == [START + timedelta(seconds=s) for s in (10, 20, 25, 30)]


def test_a_slow_callback_never_runs_twice_at_once_and_later_slots_collapse(scheduler, clock):
    release = threading.Event()
    started = threading.Semaphore(0)
    running = []
    overlaps = []
    fired = []

    def slow(slot):
        running.append(slot)
        if len(running) > 1:
            overlaps.append(slot)
        fired.append(slot)
        started.release()
        release.wait(30)
        running.remove(slot)

    scheduler.add_task("slow", ScheduledTaskTime(interval_seconds=1), slow)
    clock.advance(1)
    assert started.acquire(timeout=15)
    for _ in range(5):  # five more slots pass while the first call runs
        clock.advance(1)
    fast, record = recorder()
    scheduler.add_task("other", ScheduledTaskTime(), record)  # other ids are not held up
    assert _wait_for(lambda: fast == [START + timedelta(seconds=6)])
    release.set()
    scheduler.wait_idle()
    assert overlaps == []
    # One firing for the five slots missed while busy, never five.
    assert fired == [START + timedelta(seconds=1), START + timedelta(seconds=2)]
    assert scheduler.tasks_info().next_triggers["slow"] == START + timedelta(seconds=7)


def _wait_for(predicate, timeout=15.0):
    from tests.conftest import until

    return until(predicate, timeout=timeout)


def test_a_raising_callback_is_logged_and_the_schedule_goes_on(scheduler, clock, caplog):
    calls = []

    def boom(slot):
        calls.append(slot)
        raise RuntimeError("kaput")

    scheduler.add_task("boom", ScheduledTaskTime(interval_seconds=1), boom)
    with caplog.at_level(logging.ERROR, logger="taskengine.scheduler"):
        clock.advance(1)
        scheduler.wait_idle()
        clock.advance(1)
        scheduler.wait_idle()
    assert len(calls) == 2
    errors = [r for r in caplog.records if "boom" in r.getMessage()]
    assert len(errors) == 2
    assert errors[0].exc_info is not None
    assert "kaput" in str(errors[0].exc_info[1])


def test_async_callbacks_run_on_their_own_loop(scheduler, clock):
    import asyncio

    seen = []

    async def job(slot):
        await asyncio.sleep(0)
        seen.append((slot, threading.current_thread().name))

    async def no_argument():
        seen.append("no-arg")

    scheduler.add_task("async", ScheduledTaskTime(interval_seconds=1), job)
    scheduler.add_task("async2", ScheduledTaskTime(), no_argument)
    scheduler.add_task("returns-coroutine", ScheduledTaskTime(), lambda: no_argument())
    clock.advance(1)
    scheduler.wait_idle()
    assert seen.count("no-arg") == 2
    (slot_call,) = [s for s in seen if s != "no-arg"]
    assert slot_call[0] == START + timedelta(seconds=1)
    assert slot_call[1].startswith("taskengine-scheduler-callback")


def test_remove_task_from_inside_its_own_callback(scheduler, clock):
    fired = []

    def once_then_remove(slot):
        fired.append(slot)
        assert scheduler.remove_task("self") is True

    scheduler.add_task("self", ScheduledTaskTime(interval_seconds=1), once_then_remove)
    clock.advance(1)
    scheduler.wait_idle()
    clock.advance(5)
    scheduler.wait_idle()
    assert fired == [START + timedelta(seconds=1)]
    assert scheduler.tasks_info().tasks == {}
    assert scheduler.remove_task("self") is False


def test_remove_then_add_again_from_inside_the_callback(scheduler, clock):
    fired = []

    def rearm(slot):
        fired.append(slot)
        scheduler.remove_task("r")
        scheduler.add_task("r", ScheduledTaskTime(interval_seconds=7), rearm)

    scheduler.add_task("r", ScheduledTaskTime(interval_seconds=1), rearm)
    clock.advance(1)
    scheduler.wait_idle()
    clock.advance(7)
    scheduler.wait_idle()
    assert fired == [START + timedelta(seconds=1), START + timedelta(seconds=8)]


def test_adding_an_existing_id_replaces_it(scheduler, clock):
    old, record_old = recorder()
    new, record_new = recorder()
    scheduler.add_task("x", ScheduledTaskTime(interval_seconds=1), record_old)
    scheduler.add_task("x", ScheduledTaskTime(interval_seconds=3), record_new)
    for _ in range(3):
        clock.advance(1)
        scheduler.wait_idle()
    assert old == []
    assert new == [START + timedelta(seconds=3)]
    assert scheduler.tasks_info().tasks == {
        "x": [ScheduledTaskTime(next_trigger_time=START + timedelta(seconds=6), interval_seconds=3)]
    }


def test_tasks_info_returns_copies(scheduler):
    time = ScheduledTaskTime(interval_minutes=1)
    scheduler.add_task("a", [time], lambda: None)
    info = scheduler.tasks_info()
    info.tasks["a"].append(ScheduledTaskTime())
    info.tasks["b"] = []
    info.next_triggers.clear()
    again = scheduler.tasks_info()
    # Each time shows its pending slot, as TWIN's tasksInfo does; otherwise as added.
    assert again.tasks == {
        "a": [attrs.evolve(time, next_trigger_time=START + timedelta(minutes=1))]
    }
    assert again.next_triggers == {"a": START + timedelta(minutes=1)}
    assert again is not info


@pytest.mark.parametrize(
    ("task_id", "times", "callback", "argument"),
    [
        ("", ScheduledTaskTime(), lambda: None, "task_id"),
        (None, ScheduledTaskTime(), lambda: None, "task_id"),
        ("x" * 256, ScheduledTaskTime(), lambda: None, "task_id"),
        ("a\x00b", ScheduledTaskTime(), lambda: None, "task_id"),
        ("ok", [], lambda: None, "times"),
        ("ok", None, lambda: None, "times"),
        ("ok", "every minute", lambda: None, "times"),
        ("ok", [ScheduledTaskTime(), {"interval_seconds": 1}], lambda: None, "times"),
        ("ok", ScheduledTaskTime(), None, "callback"),
        ("ok", ScheduledTaskTime(), "print", "callback"),
        ("ok", ScheduledTaskTime(), lambda a, b: None, "callback"),
    ],
)
def test_add_task_validation(scheduler, task_id, times, callback, argument):
    with pytest.raises(TaskValidationError) as caught:
        scheduler.add_task(task_id, times, callback)
    assert caught.value.argument == argument
    assert scheduler.tasks_info().tasks == {}


def test_constructor_validation(clock):
    with pytest.raises(TaskValidationError, match="clock"):
        TaskScheduler(clock=object())
    with pytest.raises(TaskValidationError, match="callback_threads"):
        TaskScheduler(clock=clock, callback_threads=0)
    with pytest.raises(TaskValidationError, match="engine_or_store"):
        TaskScheduler(object(), clock=clock)
    with pytest.raises(TaskValidationError):
        TaskScheduler(clock=clock).remove_task(5)


def test_schedules_added_before_start_fire_after_start(clock):
    fired, record = recorder()
    sched = TaskScheduler(clock=clock)
    sched.add_task("early", ScheduledTaskTime(), record)
    clock.advance(1)
    assert fired == []
    with sched:
        sched.wait_idle()
        assert fired == [START]


def test_stop_is_final_and_waits_for_running_callbacks(clock):
    sched = TaskScheduler(clock=clock).start()
    entered, release = threading.Event(), threading.Event()
    finished = []

    def slow():
        entered.set()
        release.wait(30)
        finished.append(True)

    sched.add_task("slow", ScheduledTaskTime(), slow)
    assert entered.wait(15)
    stopper = threading.Thread(target=sched.stop)
    stopper.start()
    release.set()
    stopper.join(15)
    assert finished == [True]
    with pytest.raises(EngineStoppedError):
        sched.add_task("late", ScheduledTaskTime(), lambda: None)
    with pytest.raises(EngineStoppedError):
        sched.start()
    with pytest.raises(EngineStoppedError):
        sched.wait_idle()
    sched.stop()  # again: nothing


def test_the_timing_thread_sleeps_until_the_next_slot(clock):
    """No coarse tick: with nothing due, the thread passes its loop only when woken."""
    sched = TaskScheduler(clock=clock).start()
    try:
        sched.add_task("far", ScheduledTaskTime(interval_hours=1), lambda: None)
        sched.wait_idle()
        passes = sched._passes
        # A long way from the slot: one pass per wake-up (the fake clock's three advances;
        # at most one more if this test took the 5 s safety wake), and nothing handed over.
        for _ in range(3):
            clock.advance(60)
            sched.wait_idle()
        assert 3 <= sched._passes - passes <= 4
        assert sched._observed == int((START + timedelta(minutes=3)).timestamp() * 1000)
        assert sched._busy == {}
    finally:
        sched.stop()


def test_a_fake_clock_wakes_a_thread_that_sleeps_for_hours():
    clock = FakeClock(START)
    fired = threading.Event()
    sched = TaskScheduler(clock=clock).start()
    try:
        sched.add_task("h", ScheduledTaskTime(interval_hours=5), fired.set)
        sched.wait_idle()
        clock.advance(timedelta(hours=5))
        assert fired.wait(15)
    finally:
        sched.stop()


def test_stop_from_inside_a_callback_does_not_wait_for_itself(clock):
    sched = TaskScheduler(clock=clock).start()
    stopped = threading.Event()

    def stop_me():
        sched.stop(timeout=30)
        stopped.set()

    sched.add_task("stopper", ScheduledTaskTime(), stop_me)
    assert stopped.wait(10)  # far below the 30 s a self-wait would take
    with pytest.raises(EngineStoppedError):
        sched.add_task("late", ScheduledTaskTime(), lambda: None)


def test_replacing_a_far_schedule_many_times_does_not_grow_the_heap(scheduler, clock):
    for n in range(1000):
        scheduler.add_task("far", ScheduledTaskTime(interval_days=300 + n), lambda: None)
    assert len(scheduler._heap) <= 2 * 1 + 64 + 1
    assert scheduler.tasks_info().next_triggers == {"far": START + timedelta(days=1299)}


def test_a_scheduler_on_an_engine_takes_the_engine_clock():
    from taskengine import MemoryStore, TaskEngine

    clock = FakeClock(START)
    engine = TaskEngine(MemoryStore(), clock=clock)
    assert engine.clock is clock
    fired, record = recorder()
    with TaskScheduler(engine) as scheduler:
        scheduler.add_task("tick", ScheduledTaskTime(interval_seconds=60), record)
        clock.advance(60)  # only the engine's clock moves: the scheduler must follow it
        scheduler.wait_idle()
        assert fired == [START + timedelta(seconds=60)]
    engine.stop()


def test_a_scheduler_given_its_own_clock_keeps_it():
    from taskengine import MemoryStore, TaskEngine

    engine = TaskEngine(MemoryStore(), clock=FakeClock(START))
    own = FakeClock(START + timedelta(days=1))
    with TaskScheduler(engine, clock=own) as scheduler:
        scheduler.add_task("tick", ScheduledTaskTime(interval_seconds=60), lambda: None)
        expected = own.now() + timedelta(seconds=60)
        assert scheduler.tasks_info().next_triggers["tick"] == expected
    engine.stop()
