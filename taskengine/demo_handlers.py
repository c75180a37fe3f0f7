"""Handlers of ``taskengine demo``: real CPU work (counting primes), one of them flaky.

They live in the package so that worker processes can import them by module path, exactly as
an application's own handlers would be.
"""

from __future__ import annotations

import math
import time
from typing import Any

import taskengine

__all__ = ["count_primes", "count_primes_flaky"]


def _count(start: int, stop: int) -> int:
    found = 0
    for n in range(max(start, 2), stop):
        if n % 2 == 0:
            found += n == 2
            continue
        limit = math.isqrt(n)
        divisor = 3
        while divisor <= limit and n % divisor:
            divisor += 2
        found += divisor > limit
    return found


def count_primes(payload: dict[str, int]) -> dict[str, Any]:
    """Count the primes in ``[start, stop)``; report the CPU seconds it took."""
    began = time.process_time()
    primes = _count(payload["start"], payload["stop"])
    return {"primes": primes, "cpu_seconds": time.process_time() - began}


def count_primes_flaky(payload: dict[str, Any]) -> dict[str, Any]:
    """Like :func:`count_primes`, but the first attempt of tasks marked ``flaky`` fails."""
    result = count_primes(payload)
    if payload.get("flaky") and taskengine.current_task().attempt == 1:
        raise ConnectionError("simulated transient failure (the demo retries it)")
    return result
