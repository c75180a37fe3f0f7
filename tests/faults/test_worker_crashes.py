"""faults.md#fault-1 to #fault-4, #fault-11 to #fault-13: worker processes that die."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

import taskengine
from tests.conftest import until, worker_pids
from tests.faults.conftest import FAULTY, Recorder, assert_responsive, is_gone, read_pid
from tests.handlers import faulty

Status = taskengine.TaskStatus


def test_sigkill_mid_task_counts_the_attempt_and_spares_the_sibling(
    eng: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """faults.md#fault-1."""
    eng.register_handler("crashy", FAULTY, "action", recorder, max_worker_count=2)
    release = tmp_path / "release"
    common = {"action": "gate", "release": str(release), "pid_dir": str(tmp_path)}
    victim = eng.create("crashy", {**common, "name": "victim"}, retry_interval=0.2, retain_for=None)
    sibling = eng.create("crashy", {**common, "name": "sibling"}, retain_for=None)
    victim_pid = until(lambda: read_pid(tmp_path / "victim-1.pid"))
    sibling_pid = until(lambda: read_pid(tmp_path / "sibling-1.pid"))
    before = worker_pids()
    assert {victim_pid, sibling_pid} <= before

    killed_at = time.monotonic()
    os.kill(victim_pid, signal.SIGKILL)
    moment, crashed = until(lambda: recorder.first(victim, Status.PENDING))
    assert moment - killed_at < 1.0, "the crash was not noticed through the process sentinel"
    assert crashed.attempts == 1
    assert crashed.retries_remaining is None
    assert crashed.error is not None
    assert crashed.error.type == "WorkerCrashedError"
    assert "signal 9" in crashed.error.message
    assert "SIGKILL" in crashed.error.message
    assert str(victim_pid) in crashed.error.message
    assert eng.get(sibling).status is Status.PROCESSING  # type: ignore[union-attr]

    # The retry runs while the sibling still holds its worker: a new worker must take it.
    retry_pid = until(lambda: read_pid(tmp_path / "victim-2.pid"))
    assert retry_pid not in before
    assert eng.get(sibling).status is Status.PROCESSING  # type: ignore[union-attr]
    release.touch()
    victim_done = eng.wait(victim, timeout=20)
    sibling_done = eng.wait(sibling, timeout=20)
    assert victim_done.status is Status.SUCCESS
    assert victim_done.attempts == 2
    assert victim_done.error is None
    assert victim_done.result == retry_pid
    assert sibling_done.status is Status.SUCCESS
    assert sibling_done.attempts == 1  # nothing else was charged an attempt
    assert sibling_done.result == sibling_pid
    assert not (tmp_path / "sibling-2.pid").exists()
    assert recorder.path_when(victim, 4) == [
        ("processing", 1),
        ("pending", 1),
        ("processing", 2),
        ("success", 2),
    ]
    assert recorder.path_when(sibling, 2) == [("processing", 1), ("success", 1)]
    assert is_gone(victim_pid)
    assert_responsive(eng)


@pytest.mark.parametrize(
    ("action", "how"),
    [("os_exit0", "code 0"), ("os_exit3", "code 3"), ("c_exit", "code 0")],
)
def test_exit_without_a_result_is_a_crash(
    eng: taskengine.TaskEngine, recorder: Recorder, action: str, how: str
) -> None:
    """faults.md#fault-2: exit code 0 without a result message is not a success."""
    eng.register_handler("exits", FAULTY, "action", recorder)
    task_id = eng.create("exits", {"action": action}, retry_count=1, retry_interval=0.05)
    done = eng.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.attempts == 2  # retries apply
    assert done.error is not None
    assert done.error.type == "WorkerCrashedError"
    assert f"exited with {how} before returning a result" in done.error.message
    path = recorder.path_when(task_id, 4)
    assert path == [("processing", 1), ("pending", 1), ("processing", 2), ("failed", 2)]
    retried = recorder.of(task_id)[1]
    assert retried.error is not None
    assert retried.error.type == "WorkerCrashedError"
    assert_responsive(eng)


@pytest.mark.parametrize(
    ("action", "error_type", "message"),
    [("sys_exit", "SystemExit", "7"), ("keyboard_interrupt", "KeyboardInterrupt", "planned")],
)
def test_base_exceptions_are_handler_errors(
    eng: taskengine.TaskEngine, action: str, error_type: str, message: str
) -> None:
    """faults.md#fault-3: SystemExit and KeyboardInterrupt from a handler fail, never crash."""
    eng.register_handler("base-exc", FAULTY, "action")
    task_id = eng.create("base-exc", {"action": action}, retry_count=1, retry_interval=0.05)
    done = eng.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.attempts == 2
    assert done.error is not None
    assert done.error.type == error_type
    assert message in done.error.message
    assert done.error.traceback is not None
    assert error_type in done.error.traceback
    # The pool keeps working for the same type.
    again = eng.wait(eng.create("base-exc", {"action": "ok", "value": 5}), timeout=20)
    assert again.status is Status.SUCCESS
    assert again.result == 5
    assert_responsive(eng)


@pytest.mark.parametrize("action", ["segv", "segv_ctypes"])
def test_segfault_is_a_crash_without_a_core_file(
    eng: taskengine.TaskEngine, action: str, tmp_path: Path
) -> None:
    """faults.md#fault-4."""
    eng.register_handler("segv", FAULTY, "action")
    limit = eng.wait(eng.create("segv", {"action": "core_limit"}), timeout=20)
    assert limit.status is Status.SUCCESS
    assert tuple(limit.result) == (0, 0)  # RLIMIT_CORE=0 in workers: no core file at all
    cores_before = set(Path.cwd().glob("core*"))
    task_id = eng.create("segv", {"action": action}, retry_count=0)
    done = eng.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.error is not None
    assert done.error.type == "WorkerCrashedError"
    assert "signal 11" in done.error.message
    assert "SIGSEGV" in done.error.message
    assert set(Path.cwd().glob("core*")) == cores_before
    again = eng.wait(eng.create("segv", {"action": "ok", "value": "after"}), timeout=20)
    assert again.result == "after"
    assert_responsive(eng)


def test_all_workers_killed_at_once_with_a_queue(
    eng: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """faults.md#fault-11: kill every worker of a pool while 20 tasks are queued."""
    workers = 3
    eng.register_handler("queue", FAULTY, "action", recorder, max_worker_count=workers)
    release = tmp_path / "release"
    log = tmp_path / "runs.log"
    payload = {
        "action": "gate",
        "release": str(release),
        "pid_dir": str(tmp_path),
        "log": str(log),
    }
    ids = eng.create_many("queue", [payload] * 20, retry_interval=0.05, retain_for=None)

    def running() -> dict[str, int] | None:
        found = {i: read_pid(tmp_path / f"{i}-1.pid") for i in ids}
        live = {i: pid for i, pid in found.items() if pid is not None}
        return live if len(live) == workers else None

    victims = until(running)
    assert set(victims.values()) <= worker_pids()
    for pid in victims.values():
        os.kill(pid, signal.SIGKILL)
    until(lambda: all(is_gone(pid) for pid in victims.values()))
    release.touch()

    finals = [eng.wait(i, timeout=30) for i in ids]
    assert all(task.status is Status.SUCCESS for task in finals)
    for task in finals:
        expected = 2 if task.id in victims else 1
        assert task.attempts == expected, (task.id, task.attempts)
        assert task.result not in victims.values()
    for task_id in victims:
        recorder.path_when(task_id, 4)
        crashes = [t for t in recorder.of(task_id) if t.status is Status.PENDING]
        assert len(crashes) == 1
        assert crashes[0].error is not None
        assert crashes[0].error.type == "WorkerCrashedError"
        assert "SIGKILL" in crashes[0].error.message
    # Every attempt ran exactly once: no task was dispatched twice.
    runs = [tuple(line.split()[:2]) for line in log.read_text().splitlines()]
    assert len(runs) == len(set(runs)) == 20 + workers
    assert_responsive(eng)


def test_poison_task_fails_after_its_retries_with_the_interval_respected(
    eng: taskengine.TaskEngine, tmp_path: Path
) -> None:
    """faults.md#fault-13, retry_count=3: four crashing attempts, spaced by retry_interval."""
    eng.register_handler("poison", FAULTY, "action")
    log = tmp_path / "attempts.log"
    interval = 0.3
    task_id = eng.create(
        "poison",
        {"action": "sigkill_self", "log": str(log)},
        retry_count=3,
        retry_interval=interval,
    )
    done = eng.wait(task_id, timeout=30)
    assert done.status is Status.FAILED
    assert done.attempts == 4
    assert done.retries_remaining == 0
    assert done.error is not None
    assert done.error.type == "WorkerCrashedError"
    assert "SIGKILL" in done.error.message
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [int(attempt) for _, attempt, _ in lines] == [1, 2, 3, 4]
    stamps = [float(stamp) for _, _, stamp in lines]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= interval - 0.01 for gap in gaps), gaps
    assert_responsive(eng)


def test_poison_task_retrying_forever_does_not_hot_loop(
    eng: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """faults.md#fault-13, retry_count=None: one crash per interval while other work flows."""
    eng.register_handler("poison", FAULTY, "action", recorder)
    log = tmp_path / "attempts.log"
    interval = 0.3
    task_id = eng.create(
        "poison", {"action": "sigkill_self", "log": str(log)}, retry_interval=interval
    )
    assert_responsive(eng, "while poisoned")
    until(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, timeout=20)
    assert eng.cancel(task_id, terminate=True)
    done = eng.wait(task_id, timeout=10)
    assert done.status is Status.CANCELLED
    stamps = [float(line.split()[2]) for line in log.read_text().splitlines()]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= interval - 0.01 for gap in gaps), gaps
    until(lambda: recorder.first(task_id, Status.CANCELLED))  # and so every earlier one
    crashes = [t for t in recorder.of(task_id) if t.status is Status.PENDING]
    assert len(crashes) >= 2
    assert all(t.error is not None and t.error.type == "WorkerCrashedError" for t in crashes)
    assert [t.attempts for t in crashes] == list(range(1, len(crashes) + 1))
    assert_responsive(eng)


def _engine_pids(engine: taskengine.TaskEngine, task_type: str) -> set[int]:
    """The worker pids the engine itself believes its pool has (``Reactor.pool_facts``)."""
    reactor = engine._reactor  # the engine exposes no public pool statistics yet
    facts = reactor.submit(reactor.pool_facts).result(timeout=10)
    found = facts.get(task_type)
    return set() if found is None else set(found.pids)


def test_idle_worker_killed_between_tasks_costs_no_attempt(
    eng: taskengine.TaskEngine, recorder: Recorder
) -> None:
    """faults.md#fault-11: an idle worker's death charges nobody."""
    eng.register_handler("idle-kill", FAULTY, "action", recorder)
    idle_pid = eng.wait(eng.create("idle-kill", {"action": "pid"}), timeout=20).result
    os.kill(idle_pid, signal.SIGKILL)
    until(lambda: idle_pid not in _engine_pids(eng, "idle-kill"))  # the engine noticed
    task_id = eng.create("idle-kill", {"action": "pid"}, retain_for=None)
    done = eng.wait(task_id, timeout=20)
    assert done.status is Status.SUCCESS
    assert done.attempts == 1
    assert done.result != idle_pid
    assert recorder.path_when(task_id, 2) == [("processing", 1), ("success", 1)]
    assert_responsive(eng)


def _forkserver() -> psutil.Process:
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if any("forkserver" in part for part in child.cmdline()):
                return child
    raise AssertionError("no forkserver process")


def test_task_sent_to_a_worker_that_just_died_is_never_stuck(
    eng: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """faults.md#fault-11: a task dispatched to a worker that died at that instant.

    The engine learns of a forkserver worker's death from the fork server, so stopping the fork
    server (SIGSTOP) widens "that instant" at will: the dead worker still looks idle when the
    next task is dispatched to it.  Allowed outcomes: still pending, or retried with
    WorkerCrashedError; never stuck in processing, never run twice.  When the send itself
    fails (the usual case), the engine hands the attempt back uncounted; when the send still
    lands in the dying worker's socket, the attempt is charged.
    """
    eng.register_handler("idle-kill", FAULTY, "action", recorder)
    idle_pid = eng.wait(eng.create("idle-kill", {"action": "pid"}), timeout=20).result
    server = _forkserver()
    log = tmp_path / "runs.log"
    server.suspend()
    try:
        os.kill(idle_pid, signal.SIGKILL)
        until(lambda: is_gone(idle_pid))
        task_id = eng.create(
            "idle-kill", {"action": "pid", "log": str(log)}, retain_for=None, retry_interval=0.05
        )
        until(lambda: recorder.first(task_id, Status.PROCESSING))  # dispatched to the dead one
    finally:
        server.resume()
    done = eng.wait(task_id, timeout=20)
    assert done.status is Status.SUCCESS
    assert done.result != idle_pid
    assert [line.split()[:2] for line in log.read_text().splitlines()] == [
        [task_id, str(done.attempts)]
    ]
    # Callbacks run on their own thread: wait for the last one before reading the path.
    until(lambda: recorder.path(task_id)[-1:] == [("success", done.attempts)])
    path = recorder.path(task_id)
    if done.attempts == 2:
        assert path == [("processing", 1), ("pending", 1), ("processing", 2), ("success", 2)]
        charged = recorder.of(task_id)[1]
        assert charged.error is not None
        assert charged.error.type == "WorkerCrashedError"
    else:
        assert path == [("processing", 1), ("pending", 0), ("processing", 1), ("success", 1)]
    assert_responsive(eng)


@pytest.mark.skipif(
    os.uname().machine not in faulty.WRITE_SYSCALL, reason="needs the write syscall number"
)
def test_worker_dying_mid_result_message(eng: taskengine.TaskEngine, recorder: Recorder) -> None:
    """faults.md#fault-12: a partial message in the pipe is a crash of that worker only."""
    eng.register_handler("big", FAULTY, "action", recorder, max_worker_count=2)
    size = 64 * 1024 * 1024
    task_id = eng.create("big", {"action": "die_mid_result", "bytes": size}, retry_count=0)
    done = eng.wait(task_id, timeout=30)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "WorkerCrashedError"
    assert "SIGKILL" in done.error.message
    # The pool reads the next messages correctly: a large result still round-trips.
    ok = eng.wait(eng.create("big", {"action": "ok", "value": b"y" * size}), timeout=30)
    assert ok.status is Status.SUCCESS
    assert ok.result == b"y" * size
    assert_responsive(eng)
