"""ScheduledTaskTime validation and the pure slot arithmetic (no threads, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine import ScheduledTaskInfo, ScheduledTaskTime, TaskValidationError
from taskengine.scheduler import times as times_

from .conftest import START


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"interval_seconds": -1}, "interval_seconds"),
        ({"interval_days": -0.5}, "interval_days"),
        ({"interval_hours": float("nan")}, "interval_hours"),
        ({"interval_minutes": float("inf")}, "interval_minutes"),
        ({"interval_seconds": True}, "interval_seconds"),
        ({"interval_seconds": "5"}, "interval_seconds"),
        ({"interval_seconds": 0.0004}, "interval_seconds"),  # repeats, but rounds to 0 ms
        ({"interval_days": 10**9}, "interval_days"),  # the field given, not the total
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": ""}, "cron"),
        ({"cron": 5}, "cron"),
        ({"cron": "* * * * *", "interval_seconds": 5}, "cron"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "tz"),
        ({"tz": "Europe/Paris"}, "tz"),
        ({"next_trigger_time": datetime(2026, 1, 1)}, "next_trigger_time"),  # naive
        ({"next_trigger_time": "2026-01-01"}, "next_trigger_time"),
    ],
)
def test_invalid_times_are_rejected_naming_the_argument(kwargs, argument):
    with pytest.raises(TaskValidationError) as caught:
        ScheduledTaskTime(**kwargs)
    assert caught.value.argument == argument


def test_valid_forms_and_their_properties():
    once = ScheduledTaskTime()
    assert not once.is_repeating
    assert once.interval_ms == 0
    mixed = ScheduledTaskTime(
        interval_days=1, interval_hours=2, interval_minutes=3, interval_seconds=4.5
    )
    assert mixed.interval_ms == ((24 + 2) * 60 + 3) * 60_000 + 4500
    assert mixed.is_repeating
    assert ScheduledTaskTime(cron="*/5 * * * *").is_repeating
    assert ScheduledTaskTime(cron="*/10 * * * * *", tz="Europe/Paris").tz == "Europe/Paris"
    positional = ScheduledTaskTime(START, 0, 0, 1)
    assert positional.interval_minutes == 1
    assert positional.next_trigger_time == START


def test_next_trigger_time_is_kept_in_utc_milliseconds():
    from zoneinfo import ZoneInfo

    local = datetime(2026, 3, 2, 13, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Paris"))
    time = ScheduledTaskTime(next_trigger_time=local)
    assert time.next_trigger_time == datetime(2026, 3, 2, 12, 0, 0, 123000, tzinfo=UTC)
    assert time.next_trigger_time.tzinfo == UTC


def test_first_slots_follow_the_spec():
    assert times_.first_slot(ScheduledTaskTime(), START) == START
    assert times_.first_slot(ScheduledTaskTime(interval_minutes=5), START) == START + timedelta(
        minutes=5
    )
    at = START + timedelta(hours=3)
    assert (
        times_.first_slot(ScheduledTaskTime(next_trigger_time=at, interval_seconds=1), START) == at
    )
    # Cron: the first match strictly after now.
    assert times_.first_slot(ScheduledTaskTime(cron="*/15 * * * *"), START) == START + timedelta(
        minutes=15
    )


def test_cron_in_a_time_zone():
    # 09:00 in Paris is 08:00 UTC in winter (CET, UTC+1).
    time = ScheduledTaskTime(cron="0 9 * * *", tz="Europe/Paris")
    assert times_.first_slot(time, START) == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    # and 07:00 UTC in summer (CEST, UTC+2), after the change on 2026-03-29.
    summer = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    assert times_.first_slot(time, summer) == datetime(2026, 4, 2, 7, 0, tzinfo=UTC)
    assert times_.first_slot(ScheduledTaskTime(cron="0 9 * * *"), START) == datetime(
        2026, 3, 3, 9, 0, tzinfo=UTC
    )


def test_advance_keeps_the_phase_and_collapses_missed_slots():
    every = (ScheduledTaskTime(interval_seconds=10),)
    slot = START + timedelta(seconds=10)
    # On time: exactly one interval later, however late within the interval it fires.
    assert times_.advance(every, (slot,), slot) == (slot + timedelta(seconds=10),)
    assert times_.advance(every, (slot,), slot + timedelta(seconds=9.999)) == (
        slot + timedelta(seconds=10),
    )
    # 35 s late: the three missed slots collapse; the next keeps the original phase.
    assert times_.advance(every, (slot,), slot + timedelta(seconds=35)) == (
        slot + timedelta(seconds=40),
    )
    # Not due yet: unchanged.
    assert times_.advance(every, (slot,), slot - timedelta(seconds=1)) == (slot,)


def test_advance_of_one_shots_and_cron_and_several_times():
    once = (ScheduledTaskTime(),)
    assert times_.advance(once, (START,), START) == (None,)
    assert times_.advance(once, (None,), START) == (None,)
    cron = (ScheduledTaskTime(cron="*/15 * * * *"),)
    late = START + timedelta(minutes=47)
    assert times_.advance(cron, (START,), late) == (START + timedelta(minutes=60),)
    both = (ScheduledTaskTime(interval_seconds=10), ScheduledTaskTime(interval_seconds=25))
    slots = (START + timedelta(seconds=20), START + timedelta(seconds=25))
    assert times_.advance(both, slots, START + timedelta(seconds=20)) == (
        START + timedelta(seconds=30),
        START + timedelta(seconds=25),
    )
    assert times_.earliest((None, START, START - timedelta(1))) == START - timedelta(1)
    assert times_.earliest((None,)) is None


def test_fingerprint_depends_on_the_slots_not_the_spelling():
    a = times_.fingerprint((ScheduledTaskTime(interval_minutes=1),))
    assert a == times_.fingerprint((ScheduledTaskTime(interval_seconds=60),))
    assert a != times_.fingerprint((ScheduledTaskTime(interval_seconds=61),))
    assert a != times_.fingerprint(
        (ScheduledTaskTime(interval_minutes=1, next_trigger_time=START),)
    )


def test_scheduled_task_info_defaults_are_independent():
    one, two = ScheduledTaskInfo(), ScheduledTaskInfo()
    one.tasks["x"] = []
    assert two.tasks == {}


@given(
    every_ms=st.integers(min_value=1, max_value=10**8),
    late_ms=st.integers(min_value=0, max_value=10**10),
    offset_ms=st.integers(min_value=0, max_value=10**6),
)
def test_interval_advance_properties(every_ms, late_ms, offset_ms):
    """After a firing the next slot is after now, within one interval, and on the phase."""
    time = ScheduledTaskTime(interval_seconds=every_ms / 1000)
    slot = START + timedelta(milliseconds=offset_ms)
    now = slot + timedelta(milliseconds=late_ms)
    (nxt,) = times_.advance((time,), (slot,), now)
    assert nxt is not None
    assert now < nxt <= now + timedelta(milliseconds=time.interval_ms)
    steps, rest = divmod((nxt - slot) // timedelta(milliseconds=1), time.interval_ms)
    assert rest == 0
    assert steps >= 1
