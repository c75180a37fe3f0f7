"""Shared helpers of the benchmark scripts: statistics, machine facts, RSS, JSON output.

Every script prints one JSON object on stdout (``emit``) and takes ``--quick`` for a small run.
Figures are medians over repeated runs; contenders run round-robin within each round so that a
burst of load from another process on this shared machine hits all of them alike.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psutil

import taskengine

MIB = 1024 * 1024

T = TypeVar("T")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else round(numerator / denominator, 3)


def rounded(value: float, digits: int = 1) -> float:
    return round(value, digits)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge the figures: CPU, cores, Python, date, load."""
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "taskengine": taskengine.__version__,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def rss_mib(pid: int | None = None) -> float:
    return round(psutil.Process(pid).memory_info().rss / MIB, 1)


def worker_pids() -> list[int]:
    """Live taskengine workers below this process (they lead their own process group)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and os.getpgid(child.pid) == child.pid:
                found.append(child.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return sorted(found)


def emit(result: dict[str, Any]) -> None:
    """Print the result as JSON (stdout carries nothing else)."""
    result.setdefault("load_average_after", [round(x, 2) for x in os.getloadavg()])
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


class FinishCounter:
    """Counts final state changes of a task type; ``wait_for(n)`` blocks until n were seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._target = -1
        self._done = threading.Event()

    def __call__(self, task: taskengine.BackgroundTask) -> None:
        if task.status.is_final:
            with self._lock:
                self._count += 1
                if self._count == self._target:
                    self._done.set()

    def expect(self, target: int) -> None:
        with self._lock:
            self._count = 0
            self._target = target
            self._done.clear()

    def wait(self, timeout: float = 600.0) -> None:
        if not self._done.wait(timeout):
            raise RuntimeError(f"only {self._count} of {self._target} tasks finished in time")


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` took."""
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def round_robin(contenders: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run every contender once per round and return each one's results, round by round.

    The order rotates by one place each round, so no contender always runs first (on a cold
    cache) or last (after the others heated the machine), and a burst of load from another
    process lands on different contenders in different rounds.
    """
    names = list(contenders)
    samples: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            samples[name].append(contenders[name]())
    return samples


def medians_of(samples: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per contender, the median over rounds of each figure its rounds returned."""
    return {
        name: {key: median(run[key] for run in runs) for key in runs[0]}
        for name, runs in samples.items()
        if runs
    }
