"""Helpers of the integration tests: gates, worker sampling, interval overlap."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

import taskengine
from tests.conftest import until, worker_pids


class Gate:
    """A file-based gate for ``tests.handlers.probes.gated`` and friends."""

    def __init__(self, directory: Path, name: str) -> None:
        self.started = directory / f"{name}.started"
        self.gate = directory / f"{name}.gate"

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {"started": str(self.started), "gate": str(self.gate), **extra}

    def wait_started(self, timeout: float = 15.0) -> int:
        """Wait until the gated handler runs; return its worker's pid."""
        until(lambda: self.started.exists() and self.started.read_text(), timeout=timeout)
        return int(self.started.read_text())

    def open(self) -> None:
        self.gate.touch()


class WorkerSampler:
    """Samples the number of live worker processes on a thread until closed."""

    def __init__(self, step: float = 0.005) -> None:
        self._step = step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-worker-sampler", daemon=True)
        self.samples: list[set[int]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(worker_pids())
            self._stop.wait(self._step)

    @property
    def peak(self) -> int:
        return max((len(sample) for sample in self.samples), default=0)

    def __enter__(self) -> WorkerSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of the (start, end) intervals that overlap at one moment."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    # At equal times an end sorts before a start: touching intervals do not overlap.
    events.sort(key=lambda event: (event[0], event[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def present(task: taskengine.BackgroundTask | None) -> taskengine.BackgroundTask:
    """``task``, asserted to exist (``get`` returns None for unknown ids)."""
    assert task is not None
    return task
