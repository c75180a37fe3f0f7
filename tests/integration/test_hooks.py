"""``initialise_method`` and ``shutdown_method``: once per worker process (contract.md#engine)."""

from __future__ import annotations

from pathlib import Path

import taskengine
from taskengine import TaskStatus
from tests.conftest import until, worker_pids

from .support import is_alive

HOOKS = "tests.handlers.hooks"


def _count(markers: Path, kind: str, pid: int) -> int:
    path = markers / f"{kind}-{pid}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _marked_pids(markers: Path, kind: str) -> set[int]:
    return {int(path.name.split("-")[1]) for path in markers.glob(f"{kind}-*")}


def test_initialise_and_shutdown_run_once_per_worker_through_recycling_and_stop(
    markers: Path,
) -> None:
    engine = taskengine.TaskEngine(taskengine.MemoryStore()).start()
    try:
        engine.register_handler(
            "hooked",
            HOOKS,
            "work",
            max_worker_count=2,
            max_tasks_per_worker=2,
            idle_shutdown_timeout=None,
            initialise_method="init",
            shutdown_method="shutdown",
        )
        ids = engine.create_many("hooked", [None] * 8)
        results = [engine.wait(task_id, timeout=20).result for task_id in ids]
        pids = {pid for pid, _ in results}
        # init ran in the worker before its first task.
        assert all(initialised for _, initialised in results)
        assert len(pids) >= 4  # 8 tasks, 2 per worker
        assert pids <= _marked_pids(markers, "init")
        assert all(_count(markers, "init", pid) == 1 for pid in pids)
        # A replacement started while the backlog lasted may have found it
        # drained by the other worker: it lives on, idle, having run nothing.
        live = worker_pids()
        # Recycled workers ran their shutdown method before they ended.
        until(lambda: _marked_pids(markers, "shutdown") >= pids - live, timeout=10)
    finally:
        engine.stop(timeout=10)
    assert worker_pids() == set()
    started = _marked_pids(markers, "init")
    assert pids <= started
    assert _marked_pids(markers, "shutdown") == started
    assert all(_count(markers, "shutdown", pid) == 1 for pid in started)
    assert all(_count(markers, "init", pid) == 1 for pid in started)


def test_shutdown_method_runs_on_idle_shutdown(
    memory_engine: taskengine.TaskEngine, markers: Path
) -> None:
    memory_engine.register_handler(
        "idle",
        HOOKS,
        "work",
        idle_shutdown_timeout=0.2,
        initialise_method="init",
        shutdown_method="shutdown",
    )
    pid, initialised = memory_engine.wait(memory_engine.create("idle"), timeout=20).result
    assert initialised
    until(lambda: not is_alive(pid), timeout=10)
    assert _count(markers, "init", pid) == 1
    assert _count(markers, "shutdown", pid) == 1


def test_no_hooks_means_no_markers(memory_engine: taskengine.TaskEngine, markers: Path) -> None:
    memory_engine.register_handler("plain", HOOKS, "work", idle_shutdown_timeout=0)
    pid, initialised = memory_engine.wait(memory_engine.create("plain"), timeout=20).result
    assert not initialised
    until(lambda: not is_alive(pid), timeout=10)
    assert list(markers.iterdir()) == []


def test_initialise_failure_fails_the_attempt_with_worker_init_error(
    memory_engine: taskengine.TaskEngine,
) -> None:
    memory_engine.register_handler("broken", HOOKS, "work", initialise_method="init_fails")
    final = memory_engine.wait(memory_engine.create("broken", retry_count=0), timeout=20)
    assert final.status is TaskStatus.FAILED
    assert final.attempts == 1
    assert final.error is not None
    assert final.error.type == "WorkerInitError"
    assert "planned initialise failure" in final.error.message
    assert final.error.cause is not None
    assert final.error.cause.type == "RuntimeError"
