"""The harness of the shared scenario suite: one engine per mode, one way to let work happen."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

import taskengine
from taskengine import testing
from tests.conftest import until, worker_pids
from tests.testing import handlers

MODULE = "tests.testing.handlers"
START = datetime(2030, 1, 1, tzinfo=UTC)


class Harness:
    """An engine in one execution mode with a fake clock and a callback log."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.clock = testing.FakeClock(START)
        handlers.CLOCK[:] = [self.clock]
        self.engine = taskengine.TaskEngine(
            taskengine.MemoryStore(), execution=mode, clock=self.clock
        )
        self.calls: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()

    def record(self, task: taskengine.BackgroundTask) -> None:
        with self._lock:
            self.calls.append((task.id, task.status.value, task.attempts))

    def register(self, task_type: str, method: str, **options: object) -> None:
        self.engine.register_handler(task_type, MODULE, method, self.record, **options)  # type: ignore[arg-type]

    def path(self, task_id: str) -> list[str]:
        with self._lock:
            return [status for tid, status, _ in self.calls if tid == task_id]

    def _announced(self, task: taskengine.BackgroundTask) -> bool:
        """Whether the last callback for the task reported this status in this attempt."""
        with self._lock:
            mine = [(status, attempts) for tid, status, attempts in self.calls if tid == task.id]
        return mine[-1:] == [(task.status.value, task.attempts)]

    def settle(self, task_id: str, ready: Callable[[taskengine.BackgroundTask], bool]) -> None:
        """Let the engine work until ``ready(task)`` holds, and its callbacks have arrived.

        Inline, that is one ``run_until_idle``; with pools, a poll with a deadline (the work
        happens in other processes).
        """
        if self.mode == "inline":
            self.engine.run_until_idle()
            task = self.engine.get(task_id)
            assert task is not None
            assert ready(task), task
        else:
            until(lambda: (t := self.engine.get(task_id)) is not None and ready(t), timeout=30)
        task = self.engine.get(task_id)
        assert task is not None
        until(lambda: self._announced(task), timeout=10)

    def finish(self, task_id: str) -> taskengine.BackgroundTask:
        """Let the engine work until the task is finished; its final snapshot."""
        if self.mode == "inline":
            self.engine.run_until_idle()
            final = self.engine.wait(task_id, timeout=0)
        else:
            final = self.engine.wait(task_id, timeout=30)
        # The attempt count too: after a manual retry the first failure's callback also ends
        # in "failed", and the callbacks of the second attempt may still be on their way.
        until(lambda: self._announced(final), timeout=10)
        return final


@pytest.fixture(params=["inline", "processes"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The same scenario, once inline and once with real worker processes."""
    made = Harness(request.param)
    made.engine.start()
    yield made
    made.engine.stop(timeout=10)
    until(lambda: not worker_pids(), timeout=10)
