"""The service's task handlers: imported by module path in the worker processes.

Kept apart from ``app.py`` so that a worker imports neither FastAPI nor the web app.
"""

from __future__ import annotations

import math

import taskengine


def count_primes(payload: dict[str, int]) -> int:
    """Count the primes below ``payload["limit"]`` by trial division (deliberately CPU-heavy)."""
    limit = payload["limit"]
    found = 0
    for n in range(2, limit):
        if n % 2 == 0 and n != 2:
            continue
        root = math.isqrt(n)
        divisor = 3
        while divisor <= root and n % divisor:
            divisor += 2
        found += divisor > root or n == 2
        if n % 50_000 == 0:
            taskengine.current_task().report_progress(n / limit)
    return found
