"""Schedule values (``ScheduledTaskTime``, ``ScheduledTaskInfo``) and the pure slot arithmetic.

A *slot* is one due time of a schedule.  Everything here is a pure function of its arguments
(times, the stored slots, "now"), so the timing thread, the stores and the tests share one
meaning of "next", "missed" and "collapse":

* intervals: next = previous slot + interval, never "now + interval", so firings do not drift;
  slots that passed while the process was down or busy collapse into one firing and the next
  slot keeps the original phase;
* cron: the first match strictly after "now" (cron has no phase to keep);
* one-shot: no next slot once it fired.

Intervals are whole milliseconds (the precision every store keeps), so arithmetic on stored
slots is exact integer arithmetic.

Cron expressions are evaluated by ``cronsim`` (5 fields, or 6 with seconds first).  It was
chosen over ``croniter`` because it has no dependencies, ships type hints (``py.typed``, so
``mypy --strict`` checks our calls), is marked production/stable, follows Debian cron's rules
(DST included) with ``zoneinfo`` time zones, and is actively released by the healthchecks.io
author; croniter needs ``python-dateutil`` and ships no type hints.
"""

from __future__ import annotations

import json
import math
import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs
import cronsim

from taskengine.core import clock, errors, validation

__all__ = [
    "ScheduledTaskInfo",
    "ScheduledTaskTime",
    "advance",
    "check_times",
    "fingerprint",
    "first_slot",
    "initial_slots",
]

#: Milliseconds per unit of each interval field.
_UNIT_MS: Final = {
    "interval_days": 86_400_000,
    "interval_hours": 3_600_000,
    "interval_minutes": 60_000,
    "interval_seconds": 1000,
}
_MAX_INTERVAL_MS: Final = int(validation.MAX_DURATION * 1000)


def _check_interval(argument: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.TaskValidationError(
            argument, value, f"expected a number >= 0, got {type(value).__name__}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise errors.TaskValidationError(argument, value, "must be finite")
    if number < 0:
        raise errors.TaskValidationError(argument, value, "must be >= 0")
    return number


def _check_cron(expression: object, tz: zoneinfo.ZoneInfo | None) -> str | None:
    if expression is None:
        return None
    if not isinstance(expression, str) or not expression.strip():
        raise errors.TaskValidationError("cron", expression, "expected a cron expression (str)")
    start = datetime.now(tz or UTC)
    try:
        cronsim.CronSim(expression, start)
    except cronsim.CronSimError as exc:
        raise errors.TaskValidationError("cron", expression, str(exc)) from exc
    return expression


def _check_tz(value: object) -> zoneinfo.ZoneInfo | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise errors.TaskValidationError("tz", value, "expected an IANA time zone name (str)")
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise errors.TaskValidationError("tz", value, "unknown time zone") from exc


@attrs.frozen
class ScheduledTaskTime:
    """When a scheduled callback fires: an interval, a cron expression, or once.

    No interval and no cron: it fires once, at ``next_trigger_time`` (now if None).  With an
    interval it repeats every ``interval_days + interval_hours + interval_minutes +
    interval_seconds``, first at ``next_trigger_time`` (one interval from now if None).  With
    ``cron`` it fires at every match of the expression, first at ``next_trigger_time`` when given
    (else at the first match after now).  Intervals are kept to whole milliseconds.

    Attributes:
        next_trigger_time: the first firing, a timezone-aware datetime.
        interval_days: days between firings (int or float, >= 0).
        interval_hours: hours between firings.
        interval_minutes: minutes between firings.
        interval_seconds: seconds between firings.
        cron: a cron expression, 5 fields (``"*/5 * * * *"``) or 6 with seconds first
            (``"*/10 * * * * *"``); an alternative to the intervals.
        tz: IANA time zone name in which ``cron`` is read (``"Europe/Paris"``); UTC if None.

    Raises:
        TaskValidationError: a negative or non-finite value, a repeating interval below one
            millisecond, a bad cron expression or time zone, ``cron`` combined with intervals,
            ``tz`` without ``cron``, or a naive ``next_trigger_time``.
    """

    next_trigger_time: datetime | None = None
    interval_days: float = 0
    interval_hours: float = 0
    interval_minutes: float = 0
    interval_seconds: float = 0
    cron: str | None = None
    tz: str | None = None

    def __attrs_post_init__(self) -> None:
        moment = validation.check_aware_datetime("next_trigger_time", self.next_trigger_time)
        if moment is not None:
            object.__setattr__(self, "next_trigger_time", clock.truncate_to_millis(moment))
        total = 0.0
        last_set = "interval_seconds"  # the field an error about the total names
        for name, unit in _UNIT_MS.items():
            value = _check_interval(name, getattr(self, name))
            total += value * unit
            if value:
                last_set = name
            if total > _MAX_INTERVAL_MS:
                raise errors.TaskValidationError(
                    name, getattr(self, name), f"the total interval exceeds {_MAX_INTERVAL_MS} ms"
                )
        zone = _check_tz(self.tz)
        _check_cron(self.cron, zone)
        if self.cron is not None and total > 0:
            raise errors.TaskValidationError(
                "cron", self.cron, "a cron expression is an alternative to intervals, not both"
            )
        if self.tz is not None and self.cron is None:
            raise errors.TaskValidationError("tz", self.tz, "only applies to a cron expression")
        if total > 0 and round(total) == 0:
            raise errors.TaskValidationError(
                last_set,
                getattr(self, last_set),
                "a repeating schedule needs a total interval of at least 1 ms",
            )

    @property
    def interval_ms(self) -> int:
        """The total interval in whole milliseconds (0: no interval)."""
        total: float = sum(float(getattr(self, name)) * unit for name, unit in _UNIT_MS.items())
        return round(total)

    @property
    def is_repeating(self) -> bool:
        """Whether it fires more than once (an interval or a cron expression)."""
        return self.cron is not None or self.interval_ms > 0


@attrs.frozen(kw_only=True)
class ScheduledTaskInfo:
    """A snapshot of a scheduler's schedules; mutating it changes nothing in the scheduler.

    Attributes:
        tasks: schedule id -> its times, in the order they were added.
        next_triggers: schedule id -> its next due time (None once a one-shot has fired).
    """

    tasks: dict[str, list[ScheduledTaskTime]] = attrs.field(factory=dict)
    next_triggers: dict[str, datetime | None] = attrs.field(factory=dict)


def check_times(times: object) -> tuple[ScheduledTaskTime, ...]:
    """One ``ScheduledTaskTime`` or a non-empty iterable of them, as a tuple.

    Raises:
        TaskValidationError: anything else.
    """
    if isinstance(times, ScheduledTaskTime):
        return (times,)
    if isinstance(times, str | bytes) or not isinstance(times, Iterable):
        raise errors.TaskValidationError(
            "times", times, "expected a ScheduledTaskTime or a list of them"
        )
    items = tuple(times)
    if not items:
        raise errors.TaskValidationError("times", times, "must not be empty")
    for item in items:
        if not isinstance(item, ScheduledTaskTime):
            raise errors.TaskValidationError(
                "times", times, f"expected ScheduledTaskTime items, got {type(item).__name__}"
            )
    return items


def fingerprint(times: tuple[ScheduledTaskTime, ...]) -> str:
    """A canonical text of ``times``: equal for schedules that fire at the same slots.

    Stored with the slots, so that a schedule re-added with the same times (an application
    restarting) continues from its stored slot, and one added with other times starts afresh.
    """
    items = [
        {
            "at": None if t.next_trigger_time is None else clock.to_millis(t.next_trigger_time),
            "every_ms": t.interval_ms,
            "cron": t.cron,
            "tz": t.tz,
        }
        for t in times
    ]
    return json.dumps(items, sort_keys=True, separators=(",", ":"))


def _cron_after(time: ScheduledTaskTime, moment: datetime) -> datetime | None:
    """The first cron match strictly after ``moment`` (None if none within 50 years)."""
    assert time.cron is not None
    zone = zoneinfo.ZoneInfo(time.tz) if time.tz else UTC
    try:
        found = next(cronsim.CronSim(time.cron, moment.astimezone(zone)))
    except StopIteration:
        return None
    return clock.truncate_to_millis(found)


def first_slot(time: ScheduledTaskTime, now: datetime) -> datetime | None:
    """The first due time of ``time`` when it is added at ``now``."""
    if time.next_trigger_time is not None:
        return time.next_trigger_time
    if time.cron is not None:
        return _cron_after(time, now)
    return now + timedelta(milliseconds=time.interval_ms)


def initial_slots(
    times: tuple[ScheduledTaskTime, ...], now: datetime
) -> tuple[datetime | None, ...]:
    """The first due time of each of ``times`` (see ``first_slot``)."""
    return tuple(first_slot(t, now) for t in times)


def _next_after(time: ScheduledTaskTime, slot: datetime, now: datetime) -> datetime | None:
    if time.cron is not None:
        return _cron_after(time, max(slot, now))
    every = time.interval_ms
    if every == 0:
        return None  # a one-shot that has fired
    # The first slot of the original phase after now: every missed slot collapses into this
    # one firing, and the phase (previous + interval) is kept, so nothing drifts.
    behind = clock.to_millis(now) - clock.to_millis(slot)
    steps = max(1, behind // every + 1)
    return slot + timedelta(milliseconds=steps * every)


def advance(
    times: tuple[ScheduledTaskTime, ...], slots: tuple[datetime | None, ...], now: datetime
) -> tuple[datetime | None, ...]:
    """The slots after one firing at ``now``: every due slot moves past ``now``.

    Slots not yet due are kept.  Several due slots (missed ones, or due entries of several
    times) are consumed by the one firing.
    """
    return tuple(
        slot if slot is None or slot > now else _next_after(time, slot, now)
        for time, slot in zip(times, slots, strict=True)
    )


def earliest(slots: tuple[datetime | None, ...]) -> datetime | None:
    """The earliest pending slot, or None when none is left."""
    pending = [slot for slot in slots if slot is not None]
    return min(pending) if pending else None
