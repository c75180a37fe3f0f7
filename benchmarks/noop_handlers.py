"""Handlers used by the benchmarks (importable by worker processes)."""

from __future__ import annotations

import os
import time
from typing import Any


def noop(payload: Any) -> Any:
    return payload


def spin(iterations: int) -> int:
    """Pure-Python CPU work: a loop of ``iterations`` integer steps (holds the GIL)."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total


def timed_spin(iterations: int) -> float:
    """``spin``, returning the seconds it ran in the worker (for the utilisation figure)."""
    began = time.perf_counter()
    spin(iterations)
    return time.perf_counter() - began


def spin_pid(iterations: int) -> int:
    """``spin``, returning the worker's pid: which worker ran the task (the fairness figure)."""
    spin(iterations)
    return os.getpid()
