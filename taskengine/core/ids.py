"""Task ids: 32 lowercase hex characters of a UUIDv7 (RFC 9562).

Ids increase in creation order within one engine: within one millisecond a 12-bit counter in
``rand_a`` (RFC 9562 section 6.2, method 1) keeps them monotonic, and when it overflows the
generator borrows the next millisecond rather than break the order.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["IdGenerator", "millis_of"]

_COUNTER_MAX = 0xFFF


#: Bytes of OS randomness read at once: a ``getrandom`` call per id (two when the millisecond
#: changes) was a measurable share of ``create`` on a virtual machine.
_RANDOM_CHUNK = 4096


class IdGenerator:
    """Thread-safe, monotonic UUIDv7 generator."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0
        self._random = b""
        self._random_at = 0
        self._random_pid = -1

    def _random_bits(self, count: int) -> int:
        """``count`` bytes of OS randomness as an int (call with the lock held)."""
        # A forked child must not reuse its parent's unread bytes: the pid check refills.
        if self._random_at + count > len(self._random) or self._random_pid != os.getpid():
            self._random = os.urandom(_RANDOM_CHUNK)
            self._random_at = 0
            self._random_pid = os.getpid()
        start = self._random_at
        self._random_at += count
        return int.from_bytes(self._random[start : start + count], "big")

    def new_id(self, now_ms: int | None = None) -> str:
        """Return a new id whose timestamp is ``now_ms`` (wall clock by default)."""
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._lock:
            if ms > self._last_ms:
                self._last_ms = ms
                # Start the counter at a random point in its lower half so ids stay hard to
                # guess while leaving room for many ids in the same millisecond.
                self._counter = self._random_bits(2) & 0x7FF
            else:
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = 0
            ms = self._last_ms
            counter = self._counter
            rand_b = self._random_bits(8) & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= counter << 64
        value |= 0b10 << 62
        value |= rand_b
        return f"{value:032x}"


def millis_of(task_id: str) -> int:
    """Return the Unix millisecond timestamp embedded in a UUIDv7 id."""
    return int(task_id[:12], 16)
