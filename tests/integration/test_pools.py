"""Pool options of ``register_handler`` with real worker processes (contract.md#engine)."""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import taskengine
from taskengine import TaskStatus
from tests.conftest import until, worker_pids

from .support import Gate, WorkerSampler, is_alive, max_overlap, present

PROBES = "tests.handlers.probes"
HOOKS = "tests.handlers.hooks"
MiB = 1024 * 1024


def is_dead(pid: int) -> bool:
    return not is_alive(pid)


def test_max_worker_count_caps_concurrent_attempts_and_processes(
    memory_engine: taskengine.TaskEngine,
) -> None:
    memory_engine.register_handler("iv", PROBES, "interval", max_worker_count=2)
    with WorkerSampler() as sampler:
        ids = memory_engine.create_many("iv", [{"seconds": 0.3}] * 6)
        results = [memory_engine.wait(task_id, timeout=20).result for task_id in ids]
    assert max_overlap((start, end) for _, start, end in results) == 2
    assert len({pid for pid, _, _ in results}) == 2
    assert sampler.peak == 2, [len(s) for s in sampler.samples]


def test_max_worker_count_one_runs_attempts_one_after_another(
    memory_engine: taskengine.TaskEngine,
) -> None:
    memory_engine.register_handler("iv", PROBES, "interval", max_worker_count=1)
    with WorkerSampler() as sampler:
        ids = memory_engine.create_many("iv", [{"seconds": 0.1}] * 4)
        results = [memory_engine.wait(task_id, timeout=20).result for task_id in ids]
    assert max_overlap((start, end) for _, start, end in results) == 1
    assert len({pid for pid, _, _ in results}) == 1
    assert sampler.peak == 1


def test_idle_shutdown_timeout_positive_zero_and_none(
    make_engine: Callable[..., taskengine.TaskEngine],
) -> None:
    # Room for all three pools, so that no worker is stopped to make room for another type.
    engine = make_engine(max_total_workers=4)
    engine.register_handler("short", PROBES, "interval", idle_shutdown_timeout=0.4)
    engine.register_handler("zero", PROBES, "interval", idle_shutdown_timeout=0)
    engine.register_handler("never", PROBES, "interval", idle_shutdown_timeout=None)
    ids = {name: engine.create(name, {"seconds": 0}) for name in ("short", "zero", "never")}
    done = {name: engine.wait(task_id, timeout=20).result for name, task_id in ids.items()}
    gone = {}
    for name in ("zero", "short"):
        pid, _, end = done[name]
        until(functools.partial(is_dead, pid), timeout=10)
        gone[name] = time.monotonic() - end
        assert pid not in worker_pids()
    assert gone["zero"] < 1.5, gone
    assert gone["short"] >= 0.4, gone
    never_pid = done["never"][0]
    assert is_alive(never_pid)
    assert worker_pids() == {never_pid}
    # The kept worker still serves new tasks.
    assert engine.wait(engine.create("never", {"seconds": 0}), timeout=10).result[0] == never_pid


def test_max_tasks_per_worker_recycles_after_that_many_tasks(
    memory_engine: taskengine.TaskEngine,
) -> None:
    memory_engine.register_handler("recycle", PROBES, "interval", max_tasks_per_worker=2)
    pids = [
        memory_engine.wait(memory_engine.create("recycle", {"seconds": 0}), timeout=20).result[0]
        for _ in range(5)
    ]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4], pids
    assert len(set(pids)) == 3, pids
    until(lambda: not is_alive(pids[0]) and not is_alive(pids[2]), timeout=10)


def test_max_tasks_per_worker_holds_for_a_burst_of_short_tasks(
    memory_engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    # Short tasks are prefetched into the worker's pipe: the count must include those.
    memory_engine.register_handler("recycle", PROBES, "log_id", max_tasks_per_worker=2)
    log = tmp_path / "runs.log"
    ids = memory_engine.create_many("recycle", [{"log": str(log)}] * 12)
    pids = [memory_engine.wait(task_id, timeout=30).result for task_id in ids]
    assert max(collections.Counter(pids).values()) == 2, pids
    assert len(set(pids)) == 6


def test_every_task_runs_exactly_once_with_two_workers(
    memory_engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    memory_engine.register_handler("once", PROBES, "log_id", max_worker_count=2)
    log = tmp_path / "runs.log"
    ids = memory_engine.create_many("once", [{"log": str(log)}] * 300)
    finals = [memory_engine.wait(task_id, timeout=60) for task_id in ids]
    assert all(task.status is TaskStatus.SUCCESS and task.attempts == 1 for task in finals)
    runs = [line.split() for line in log.read_text().splitlines()]
    assert collections.Counter(task_id for task_id, _ in runs) == dict.fromkeys(ids, 1)
    assert {int(pid) for _, pid in runs} == {task.result for task in finals}


def test_max_memory_per_worker_recycles_after_the_task_that_crossed_it(
    memory_engine: taskengine.TaskEngine,
) -> None:
    # The baseline RSS of a worker that imported the probes module and ran one task.
    memory_engine.register_handler("rss", PROBES, "rss", idle_shutdown_timeout=0)
    _, baseline = memory_engine.wait(memory_engine.create("rss"), timeout=20).result
    limit = baseline + 50 * MiB
    memory_engine.register_handler("hog", PROBES, "hog", max_memory_per_worker=limit)

    def run(mb: int) -> taskengine.BackgroundTask:
        return memory_engine.wait(memory_engine.create("hog", {"mb": mb}), timeout=20)

    small = run(0)
    big = run(60)
    after = run(0)
    assert small.result[1] < limit
    assert big.status is TaskStatus.SUCCESS
    assert big.result[1] > limit
    assert big.result[0] == small.result[0]  # under the limit: the worker was kept
    assert after.result[0] != big.result[0]  # over it: recycled after its task
    assert after.result[1] < limit
    until(lambda: not is_alive(big.result[0]), timeout=10)


def test_execution_timeout_kills_the_attempt_and_retries_on_a_new_worker(
    memory_engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    memory_engine.register_handler("slow", PROBES, "sleep_logged", execution_timeout=0.5)
    log = tmp_path / "attempts.log"
    started = time.monotonic()
    task_id = memory_engine.create(
        "slow", {"seconds": 30, "log": str(log)}, retry_count=1, retry_interval=0
    )
    final = memory_engine.wait(task_id, timeout=20)
    assert time.monotonic() - started < 10
    assert final.status is TaskStatus.FAILED
    assert final.attempts == 2
    assert final.retries_remaining == 0
    assert final.error is not None
    assert final.error.type == "TaskTimeoutError"
    attempts = [line.split() for line in log.read_text().splitlines()]
    assert [attempt for attempt, _ in attempts] == ["1", "2"]
    killed = {int(pid) for _, pid in attempts}
    assert len(killed) == 2  # the first worker was killed and replaced
    until(lambda: not any(is_alive(pid) for pid in killed), timeout=10)
    fast = memory_engine.wait(
        memory_engine.create("slow", {"seconds": 0, "log": str(log)}), timeout=20
    )
    assert fast.status is TaskStatus.SUCCESS
    assert fast.result not in killed


def test_static_method_handlers(memory_engine: taskengine.TaskEngine) -> None:
    memory_engine.register_handler("double", "tests.handlers.basic", "Static.double")
    memory_engine.register_handler("describe", PROBES, "Tools.describe")
    memory_engine.register_handler("adescribe", PROBES, "Tools.async_describe")
    assert memory_engine.wait(memory_engine.create("double", 21), timeout=20).result == 42
    described = memory_engine.wait(memory_engine.create("describe", {"b": 1, "a": 2}), 20)
    assert described.result["keys"] == ["a", "b"]
    adescribed = memory_engine.wait(memory_engine.create("adescribe", {"y": 1, "x": 2}), 20)
    assert adescribed.result == ["x", "y"]


def test_registering_again_replaces_the_handler_but_running_attempts_finish_on_the_old(
    memory_engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    gate = make_gate("old")
    memory_engine.register_handler("ver", PROBES, "version_one", max_worker_count=2)
    running = memory_engine.create("ver", gate.payload())
    old_pid = gate.wait_started()
    memory_engine.register_handler("ver", PROBES, "version_two", max_worker_count=2)
    newer = memory_engine.wait(memory_engine.create("ver", {}), timeout=20)
    assert newer.result[0] == "v2"
    assert newer.result[1] != old_pid
    assert present(memory_engine.get(running)).status is TaskStatus.PROCESSING
    gate.open()
    old = memory_engine.wait(running, timeout=20)
    assert old.result == ("v1", old_pid)
    # The old worker retires after its attempt: it never runs the new handler.
    until(lambda: not is_alive(old_pid), timeout=10)
    later = [memory_engine.create("ver", {}) for _ in range(3)]
    assert {memory_engine.wait(t, timeout=20).result[0] for t in later} == {"v2"}


def test_unregister_drains_the_pool_and_pending_tasks_wait_for_a_new_registration(
    memory_engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate], markers: Path
) -> None:
    gate = make_gate("drain")
    memory_engine.register_handler(
        "drain", HOOKS, "gated", initialise_method="init", shutdown_method="shutdown"
    )
    running = memory_engine.create("drain", gate.payload(value="first"))
    pid = gate.wait_started()
    waiting = memory_engine.create("drain", gate.payload(value="second"))
    memory_engine.unregister_handler("drain")
    gate.open()
    # The running attempt finishes on its worker; then the worker shuts down gracefully.
    assert memory_engine.wait(running, timeout=20).result == ("first", pid)
    until(lambda: not is_alive(pid), timeout=10)
    assert (markers / f"shutdown-{pid}").read_text() == "x\n"
    assert worker_pids() == set()
    pending = memory_engine.get(waiting)
    assert pending is not None
    assert pending.status is TaskStatus.PENDING
    assert pending.attempts == 0
    memory_engine.register_handler("drain", PROBES, "gated")
    second = memory_engine.wait(waiting, timeout=20)
    assert second.status is TaskStatus.SUCCESS
    assert second.result[0] == "second"


def test_unregister_unknown_type_raises(memory_engine: taskengine.TaskEngine) -> None:
    with pytest.raises(taskengine.HandlerNotFoundError):
        memory_engine.unregister_handler("never-registered")
    memory_engine.register_handler("once", PROBES, "rss")
    memory_engine.unregister_handler("once")
    with pytest.raises(taskengine.HandlerNotFoundError):
        memory_engine.unregister_handler("once")


def _run_backlog_then_other_type(
    engine: taskengine.TaskEngine,
) -> tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]]:
    """A backlog of slow A tasks fills both slots; then B tasks arrive."""
    engine.register_handler("A", PROBES, "interval", max_worker_count=2)
    engine.register_handler("B", PROBES, "interval", max_worker_count=2)
    a_ids = engine.create_many("A", [{"seconds": 0.25}] * 8)
    until(lambda: len(engine.query("A", status="processing").entities) == 2, timeout=20)
    b_ids = engine.create_many("B", [{"seconds": 0.05}] * 2)
    a_results = [engine.wait(task_id, timeout=30).result for task_id in a_ids]
    b_results = [engine.wait(task_id, timeout=30).result for task_id in b_ids]
    return a_results, b_results


def test_max_total_workers_does_not_starve_a_type_behind_another_backlog(
    make_engine: Callable[..., taskengine.TaskEngine],
) -> None:
    engine = make_engine(max_total_workers=2)
    a_results, b_results = _run_backlog_then_other_type(engine)
    # Every B task finished before A's backlog drained.
    assert max(end for _, _, end in b_results) < max(end for _, _, end in a_results)


def test_max_total_workers_holds_while_a_starved_type_takes_over(
    make_engine: Callable[..., taskengine.TaskEngine],
) -> None:
    engine = make_engine(max_total_workers=2)
    with WorkerSampler() as sampler:
        a_results, b_results = _run_backlog_then_other_type(engine)
    assert sampler.peak == 2, [len(s) for s in sampler.samples if len(s) > 2]
    assert max_overlap([(s, e) for _, s, e in a_results + b_results]) <= 2


def test_max_total_workers_caps_two_types_due_at_once() -> None:
    engine = taskengine.TaskEngine(taskengine.MemoryStore(), max_total_workers=1)
    try:
        engine.register_handler("A", PROBES, "interval")
        engine.register_handler("B", PROBES, "interval")
        a = engine.create("A", {"seconds": 0.3})
        b = engine.create("B", {"seconds": 0.3})
        with WorkerSampler() as sampler:
            engine.start()
            intervals = [engine.wait(t, timeout=20).result[1:] for t in (a, b)]
    finally:
        engine.stop(timeout=10)
    assert worker_pids() == set()
    assert sampler.peak == 1
    assert max_overlap(intervals) == 1


def test_a_type_with_nothing_due_leaves_the_shared_slots_to_a_type_with_a_backlog() -> None:
    """With max_total_workers=2, once type A has no more work, type B runs two at a time.

    Regression: the planner used to reserve the free slot for A (the type with fewest workers)
    although A had nothing due, so B stayed on one worker for the rest of its backlog.
    """
    engine = taskengine.TaskEngine(taskengine.MemoryStore(), max_total_workers=2)
    engine.register_handler("A", PROBES, "interval", max_worker_count=2)
    engine.register_handler("B", PROBES, "interval", max_worker_count=2)
    engine.start()
    try:
        a_ids = engine.create_many("A", [{"seconds": 0.05}] * 2, retain_for=None)
        for task_id in a_ids:
            engine.wait(task_id, timeout=60)  # A's worker(s) now idle, holding the slots
        b_ids = engine.create_many("B", [{"seconds": 0.3}] * 8, retain_for=None)
        b_runs = [engine.wait(i, timeout=60).result for i in b_ids]
    finally:
        engine.stop(timeout=10)
    intervals = sorted((start, end) for _, start, end in b_runs)
    assert max_overlap(intervals) == 2
    # Two at a time for the whole backlog: 8 runs of 0.3 s take about 1.2 s, not 2.4 s.
    assert intervals[-1][1] - intervals[0][0] < 2.0
