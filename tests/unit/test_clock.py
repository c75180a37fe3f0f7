from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.core.clock import (
    Clock,
    FakeClock,
    SystemClock,
    from_millis,
    to_millis,
    truncate_to_millis,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=UTC)

fixed_offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.one_of(st.just(UTC), fixed_offsets),
)


def test_truncate_to_millis_cuts_microseconds() -> None:
    moment = datetime(2024, 1, 1, 0, 0, 0, 123_999, tzinfo=UTC)
    assert truncate_to_millis(moment) == datetime(2024, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC)


def test_truncate_to_millis_converts_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2024, 1, 1, 2, 0, 0, 456_789, tzinfo=plus_two)
    truncated = truncate_to_millis(moment)
    assert truncated.tzinfo is UTC
    assert truncated == datetime(2024, 1, 1, 0, 0, 0, 456_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "millis"),
    [
        (EPOCH, 0),
        (datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), 1000),
        (datetime(1970, 1, 1, 0, 0, 0, 1_999, tzinfo=UTC), 1),
        (datetime(2024, 5, 17, 12, 30, 45, 123_000, tzinfo=UTC), 1_715_949_045_123),
        # Before the epoch, milliseconds are floored like the truncation.
        (datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC), -1),
        (datetime(1970, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1))), 0),
    ],
)
def test_to_millis_known_values(moment: datetime, millis: int) -> None:
    assert to_millis(moment) == millis


def test_from_millis_known_values() -> None:
    assert from_millis(0) == EPOCH
    assert from_millis(1_715_949_045_123) == START
    assert from_millis(-1) == datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    assert from_millis(0).tzinfo is UTC


@settings(max_examples=300, deadline=None)
@given(aware_datetimes)
def test_to_millis_from_millis_round_trip(moment: datetime) -> None:
    back = from_millis(to_millis(moment))
    assert back == truncate_to_millis(moment)
    assert back.tzinfo is UTC
    assert back.microsecond % 1000 == 0
    assert timedelta(0) <= moment - back < timedelta(milliseconds=1)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**41), max_value=2**42))
def test_from_millis_to_millis_round_trip(millis: int) -> None:
    assert to_millis(from_millis(millis)) == millis


@settings(max_examples=200, deadline=None)
@given(aware_datetimes, aware_datetimes)
def test_to_millis_is_monotonic(a: datetime, b: datetime) -> None:
    if a <= b:
        assert to_millis(a) <= to_millis(b)


def test_system_clock_gives_aware_utc_millisecond_times() -> None:
    clock = SystemClock()
    before = datetime.now(UTC)
    now = clock.now()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0
    assert truncate_to_millis(before) <= now <= after
    assert isinstance(clock, Clock)
    calls: list[int] = []
    clock.add_listener(lambda: calls.append(1))
    clock.remove_listener(lambda: None)
    assert calls == []


def test_fake_clock_is_a_clock() -> None:
    assert isinstance(FakeClock(START), Clock)


def test_fake_clock_starts_at_the_given_time_truncated() -> None:
    clock = FakeClock(START + timedelta(microseconds=999))
    assert clock.now() == START
    assert clock.now().tzinfo is UTC


def test_fake_clock_converts_an_aware_start_to_utc() -> None:
    clock = FakeClock(datetime(2024, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=3))))
    assert clock.now() == datetime(2024, 1, 1, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_fake_clock_defaults_to_the_real_time() -> None:
    before = truncate_to_millis(datetime.now(UTC))
    clock = FakeClock()
    after = datetime.now(UTC)
    assert before <= clock.now() <= after


def test_fake_clock_does_not_move_by_itself() -> None:
    clock = FakeClock(START)
    assert clock.now() == clock.now() == START


def test_fake_clock_rejects_a_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (5, START + timedelta(seconds=5)),
        (0, START),
        (0.25, START + timedelta(milliseconds=250)),
        (timedelta(hours=1), START + timedelta(hours=1)),
        (timedelta(microseconds=1500), START + timedelta(milliseconds=1)),
    ],
)
def test_fake_clock_advance(step: float | timedelta, expected: datetime) -> None:
    clock = FakeClock(START)
    assert clock.advance(step) == expected
    assert clock.now() == expected
    assert clock.now().microsecond % 1000 == 0


def test_fake_clock_advances_accumulate() -> None:
    clock = FakeClock(START)
    for _ in range(10):
        clock.advance(1.5)
    assert clock.now() == START + timedelta(seconds=15)


@pytest.mark.parametrize("step", [-1, -0.001, timedelta(seconds=-1)])
def test_fake_clock_rejects_a_negative_step(step: float | timedelta) -> None:
    clock = FakeClock(START)
    calls: list[datetime] = []
    clock.add_listener(lambda: calls.append(clock.now()))
    with pytest.raises(ValueError, match="non-negative"):
        clock.advance(step)
    assert clock.now() == START
    assert calls == []


def test_fake_clock_listeners_hear_every_advance_after_the_move() -> None:
    clock = FakeClock(START)
    seen_a: list[datetime] = []
    seen_b: list[datetime] = []

    def listener_a() -> None:
        seen_a.append(clock.now())

    def listener_b() -> None:
        seen_b.append(clock.now())

    clock.add_listener(listener_a)
    clock.add_listener(listener_b)
    clock.advance(1)
    clock.advance(timedelta(seconds=2))
    assert seen_a == [START + timedelta(seconds=1), START + timedelta(seconds=3)]
    assert seen_b == seen_a

    clock.remove_listener(listener_a)
    clock.advance(1)
    assert len(seen_a) == 2
    assert seen_b[-1] == START + timedelta(seconds=4)


def test_fake_clock_remove_unknown_listener_is_a_no_op() -> None:
    clock = FakeClock(START)
    clock.remove_listener(lambda: None)
    assert clock.advance(1) == START + timedelta(seconds=1)


def test_fake_clock_listener_may_remove_itself_while_called() -> None:
    clock = FakeClock(START)
    calls: list[int] = []

    def once() -> None:
        calls.append(1)
        clock.remove_listener(once)

    clock.add_listener(once)
    clock.advance(1)
    clock.advance(1)
    assert calls == [1]
