"""Engine lifecycle, real workers: create before start, stop, with-block (contract.md#engine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import taskengine
from taskengine import TaskStatus
from tests.conftest import worker_pids

from .support import Gate, is_alive, present

PROBES = "tests.handlers.probes"
BASIC = "tests.handlers.basic"


def test_tasks_created_before_start_wait_then_run(tmp_path: Path) -> None:
    engine = taskengine.TaskEngine(taskengine.SqliteStore(tmp_path / "tasks.db"))
    try:
        engine.register_handler("echo", BASIC, "echo")
        ids = [engine.create("echo", n, retain_for=None) for n in range(3)]
        for task_id in ids:
            task = engine.get(task_id)
            assert task is not None
            assert task.status is TaskStatus.PENDING
            assert task.attempts == 0
        assert worker_pids() == set()
        engine.start()
        assert [engine.wait(t, timeout=20).result for t in ids] == [0, 1, 2]
    finally:
        engine.stop(timeout=10)
    assert worker_pids() == set()


def test_every_call_after_stop_raises_engine_stopped(tmp_path: Path) -> None:
    engine = taskengine.TaskEngine(taskengine.SqliteStore(tmp_path / "tasks.db")).start()
    engine.register_handler("echo", BASIC, "echo")
    task_id = engine.create("echo", 1, retain_for=None)
    engine.wait(task_id, timeout=20)
    engine.stop(timeout=10)
    calls: list[Callable[[], object]] = [
        engine.start,
        lambda: engine.create("echo", 2),
        lambda: engine.create_many("echo", [3]),
        lambda: engine.get(task_id),
        lambda: engine.wait(task_id, timeout=1),
        lambda: engine.query(),
        lambda: engine.retry(task_id),
        lambda: engine.cancel(task_id),
        lambda: engine.remove(task_id),
        lambda: engine.register_handler("echo", BASIC, "echo"),
        lambda: engine.unregister_handler("echo"),
    ]
    for call in calls:
        with pytest.raises(taskengine.EngineStoppedError):
            call()
    engine.stop(timeout=1)  # a second stop does nothing


def test_stop_ends_every_worker_and_runs_their_shutdown(
    make_gate: Callable[[str], Gate], markers: Path
) -> None:
    engine = taskengine.TaskEngine(taskengine.MemoryStore(), max_total_workers=3).start()
    try:
        for name in ("a", "b"):
            engine.register_handler(
                name,
                "tests.handlers.hooks",
                "work",
                max_worker_count=1,
                idle_shutdown_timeout=None,
                initialise_method="init",
                shutdown_method="shutdown",
            )
        engine.register_handler("gated", PROBES, "gated", idle_shutdown_timeout=None)
        pids = {engine.wait(engine.create(name), timeout=20).result[0] for name in ("a", "b")}
        gate = make_gate("stop")
        running = engine.create("gated", gate.payload(value="finished"), retain_for=None)
        gated_pid = gate.wait_started()
        assert worker_pids() == {*pids, gated_pid}
        gate.open()
    finally:
        engine.stop(timeout=10)
    # Nothing to wait for: stop returns once every worker has ended.
    assert worker_pids() == set()
    assert not any(is_alive(pid) for pid in {*pids, gated_pid})
    assert all((markers / f"shutdown-{pid}").read_text() == "x\n" for pid in pids)
    # The running attempt was allowed to finish within the stop timeout.
    assert present(engine.store.get(running)).status is TaskStatus.SUCCESS


def test_stop_kills_attempts_that_outlast_its_timeout(
    memory_engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    memory_engine.register_handler("gated", PROBES, "gated")
    gate = make_gate("outlast")
    task_id = memory_engine.create("gated", gate.payload(), retain_for=None)
    pid = gate.wait_started()
    started = time.monotonic()
    memory_engine.stop(timeout=0.3)
    assert time.monotonic() - started < 5
    assert worker_pids() == set()
    assert not is_alive(pid)
    cut_short = memory_engine.store.get(task_id)
    assert cut_short is not None
    assert cut_short.status is TaskStatus.PENDING  # retried forever by default
    assert cut_short.error is not None
    assert cut_short.error.type == "WorkerCrashedError"


def test_context_manager_starts_and_stops() -> None:
    with taskengine.TaskEngine(taskengine.MemoryStore()) as engine:
        engine.register_handler("pid", BASIC, "pid", idle_shutdown_timeout=None)
        pid = engine.wait(engine.create("pid"), timeout=20).result
        assert pid in worker_pids()
    assert worker_pids() == set()
    assert not is_alive(pid)
    with pytest.raises(taskengine.EngineStoppedError):
        engine.create("pid")


def test_context_manager_stops_on_an_exception() -> None:
    class Planned(Exception):
        pass

    def run_then_raise(engine: taskengine.TaskEngine) -> None:
        engine.register_handler("pid", BASIC, "pid", idle_shutdown_timeout=None)
        pids.append(engine.wait(engine.create("pid"), timeout=20).result)
        assert pids[0] in worker_pids()
        raise Planned

    pids: list[int] = []
    engine = taskengine.TaskEngine(taskengine.MemoryStore())
    with pytest.raises(Planned), engine:
        run_then_raise(engine)
    assert worker_pids() == set()
    assert not is_alive(pids[0])
    with pytest.raises(taskengine.EngineStoppedError):
        engine.get("0" * 32)
