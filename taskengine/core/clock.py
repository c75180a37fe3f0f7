"""Time sources.

Records carry timezone-aware UTC datetimes truncated to whole milliseconds, the precision every
store keeps and the JSON form writes, so a task read back from any store compares equal to the
one written.  Waiting (timeouts, idle shutdown) never uses these wall-clock values: it uses
``time.monotonic`` so that a wall-clock jump changes no timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "from_millis", "to_millis", "truncate_to_millis"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def truncate_to_millis(moment: datetime) -> datetime:
    """Return ``moment`` in UTC with its microseconds cut to whole milliseconds."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    extra = moment.microsecond % 1000
    # Engine dates are whole milliseconds already (this runs for every transition).
    return moment if not extra else moment.replace(microsecond=moment.microsecond - extra)


def to_millis(moment: datetime) -> int:
    """Return the Unix time of an aware datetime in integer milliseconds."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_millis(millis: int) -> datetime:
    """Return the aware UTC datetime of a Unix time in integer milliseconds."""
    return _EPOCH + timedelta(0, 0, 0, millis)


@runtime_checkable
class Clock(Protocol):
    """What the engine needs from a clock: the current time and a way to hear it jump."""

    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime, truncated to milliseconds."""
        ...

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the time moves other than by itself (a fake clock)."""
        ...

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        ...


class SystemClock:
    """The real wall clock; it never jumps on request, so listeners are never called."""

    def now(self) -> datetime:
        """Return the current UTC time, truncated to milliseconds."""
        # Integer milliseconds first: one datetime built instead of two (it runs several times
        # per attempt on the reactor thread).
        return _EPOCH + timedelta(0, 0, 0, time.time_ns() // 1_000_000)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Accept and ignore a listener: the system clock is never advanced by hand."""

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Accept and ignore a listener removal."""


class FakeClock:
    """A clock that only moves when told to, for deterministic tests.

    Args:
        start: the initial time (aware); the current real time by default.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        # Full precision inside, so many sub-millisecond steps add up; now() truncates.
        self._now = (start or datetime.now(UTC)).astimezone(UTC)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        """Return the fake current time."""
        with self._lock:
            return truncate_to_millis(self._now)

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move the clock forward and wake everything waiting on it; returns the new time."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("FakeClock.advance needs a non-negative step")
        with self._lock:
            self._now = self._now + step
            now = truncate_to_millis(self._now)
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return now

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every ``advance``."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
