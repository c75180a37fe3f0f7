"""The retention sweep: deletes finished tasks whose ``date_retain_until`` has passed.

It runs on its own thread and timer, so a long purge never delays dispatching.  Correctness does
not depend on it: an expired task is already invisible to every read (``transitions.is_visible``);
the sweep only reclaims space.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Final

from taskengine.core import clock, errors
from taskengine.stores import base

__all__ = ["RetentionSweeper"]

log = logging.getLogger(__name__)

#: Rows deleted per store call, so one sweep never holds the write lock for long.
PURGE_BATCH: Final = 1000


class RetentionSweeper:
    """Deletes expired tasks at the next expiry, and at least every ``interval`` seconds."""

    def __init__(self, store: base.TaskStore, clock_: clock.Clock, interval: float = 60.0) -> None:
        self._store = store
        self._clock = clock_
        self._interval = interval
        self._wakeup = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="taskengine-retention", daemon=True)
        self.purged = 0
        self._next_sweep = clock.from_millis(0)  # when the thread plans to sweep next

    def start(self) -> None:
        """Start the sweep thread."""
        self._thread.start()

    def wake(self) -> None:
        """Sweep now (the clock jumped)."""
        self._wakeup.set()

    def expires_at(self, moment: datetime) -> None:
        """A finished task expires at ``moment``: sweep then, if that is before the next sweep."""
        if moment < self._next_sweep:
            self._wakeup.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the sweep thread."""
        self._stopping = True
        self._wakeup.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def sweep(self) -> int:
        """Delete every expired task now; return how many were deleted."""
        total = 0
        while not self._stopping:
            purged = self._store.purge_expired(self._clock.now(), PURGE_BATCH)
            total += len(purged)
            if len(purged) < PURGE_BATCH:
                break
        self.purged += total
        return total

    def _seconds_to_next(self) -> float:
        upcoming = self._store.next_expiry()
        if upcoming is None:
            return self._interval
        ahead = (upcoming - self._clock.now()).total_seconds()
        return min(self._interval, max(0.0, ahead) + 0.001)

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            # Until the next sweep time is known, any new expiry must wake the thread: the
            # store read below may have missed a task finished meanwhile.
            self._next_sweep = datetime.max.replace(tzinfo=UTC)
            self._wakeup.clear()
            try:
                self.sweep()
                delay = self._seconds_to_next()
                backoff = 0.0
            except errors.StoreError:
                if not backoff:
                    log.warning("retention sweep failed; retrying with backoff", exc_info=True)
                backoff = min(60.0, max(0.5, backoff * 2))
                delay = backoff
            self._next_sweep = self._clock.now() + timedelta(seconds=delay)
            self._wakeup.wait(delay)
