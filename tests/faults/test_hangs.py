"""faults.md#fault-5, 6, 10: handlers and shutdown methods that never return."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

import taskengine
from taskengine.testing import FakeClock
from tests.conftest import until, worker_pids
from tests.faults.conftest import (
    FAULTY,
    Recorder,
    assert_responsive,
    is_gone,
    make_engine,
    read_pid,
    stop_and_check,
)
from tests.handlers import faulty

Status = taskengine.TaskStatus
#: Seconds between SIGTERM and SIGKILL on a timeout (supervisor.KILL_GRACE).
GRACE = 1.0
#: Slack for process start-up and scheduling on a loaded CI machine.
SLACK = 3.0


@pytest.mark.parametrize("action", ["hang", "hang_ignore_term", "spawn_child_and_hang"])
def test_execution_timeout_kills_the_process_group(
    eng: taskengine.TaskEngine, recorder: Recorder, action: str, tmp_path: Path
) -> None:
    """faults.md#fault-5: TERM, then KILL after the grace, to the worker's whole process group."""
    timeout = 0.5
    eng.register_handler("hangs", FAULTY, "action", recorder, execution_timeout=timeout)
    child_file = tmp_path / "grandchild.pid"
    payload = {
        "action": action,
        "pid_dir": str(tmp_path),
        "name": "worker",
        "child_pid_file": str(child_file),
    }
    task_id = eng.create("hangs", payload, retry_count=0)
    worker_pid = until(lambda: read_pid(tmp_path / "worker-1.pid"))
    started = time.monotonic()  # the handler runs: the execution clock started before this
    grandchild = until(lambda: read_pid(child_file)) if action == "spawn_child_and_hang" else None

    done = eng.wait(task_id, timeout=timeout + GRACE + SLACK + 5)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + GRACE + SLACK, elapsed
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.error is not None
    assert done.error.type == "TaskTimeoutError"
    assert "execution_timeout=0.5" in done.error.message
    assert str(worker_pid) in done.error.message
    until(lambda: is_gone(worker_pid), timeout=5)
    if grandchild is not None:
        # It ignored SIGTERM; only the SIGKILL sent to the worker's group could end it.
        until(lambda: is_gone(grandchild), timeout=5)
    assert recorder.path_when(task_id, 2) == [("processing", 1), ("failed", 1)]
    # A new worker serves the type.
    again = eng.wait(eng.create("hangs", {"action": "pid"}), timeout=20)
    assert again.status is Status.SUCCESS
    assert again.result != worker_pid
    assert_responsive(eng)


def test_execution_timeout_retries_apply(eng: taskengine.TaskEngine, tmp_path: Path) -> None:
    """faults.md#fault-5: a timed-out attempt is retried like any failed attempt."""
    eng.register_handler("hangs", FAULTY, "action", execution_timeout=0.3)
    log = tmp_path / "runs.log"
    task_id = eng.create(
        "hangs", {"action": "hang", "log": str(log)}, retry_count=1, retry_interval=0.05
    )
    done = eng.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.attempts == 2
    assert done.error is not None
    assert done.error.type == "TaskTimeoutError"
    assert len(log.read_text().splitlines()) == 2


def test_hang_without_timeout_stays_processing_until_terminated(
    eng: taskengine.TaskEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """faults.md#fault-6: the hung task stays processing; cancel(terminate=True) ends it."""
    eng.register_handler("hangs", FAULTY, "action", recorder)
    payload = {"action": "hang", "pid_dir": str(tmp_path), "name": "hung"}
    task_id = eng.create("hangs", payload, retain_for=None)
    hung_pid = until(lambda: read_pid(tmp_path / "hung-1.pid"))

    assert_responsive(eng, "while hung")  # the rest of the engine keeps working
    snapshot = eng.get(task_id)
    assert snapshot is not None
    assert snapshot.status is Status.PROCESSING

    assert eng.cancel(task_id, terminate=True)
    done = eng.wait(task_id, timeout=10)
    assert done.status is Status.CANCELLED
    assert done.attempts == 1
    until(lambda: is_gone(hung_pid), timeout=5)
    # The killed attempt is not written back as a crash: exactly two transitions.
    assert recorder.path_when(task_id, 2) == [("processing", 1), ("cancelled", 1)]
    assert len(recorder.of(task_id)) == 2
    final = eng.get(task_id)
    assert final is not None
    assert final.status is Status.CANCELLED
    # The pool is replenished.
    again = eng.wait(eng.create("hangs", {"action": "pid"}), timeout=20)
    assert again.status is Status.SUCCESS
    assert again.result != hung_pid
    assert not is_gone(again.result)


def test_stop_with_a_hung_task_returns_in_time_and_leaves_no_worker(tmp_path: Path) -> None:
    """faults.md#fault-6: stop(timeout=1) returns within about 1 s + grace and kills the worker."""
    store = taskengine.MemoryStore()
    engine = make_engine(store=store)
    try:
        engine.register_handler("hangs", FAULTY, "action")
        engine.register_handler("idle", FAULTY, "action")
        payload = {"action": "hang_ignore_term", "pid_dir": str(tmp_path), "name": "hung"}
        task_id = engine.create("hangs", payload)
        engine.wait(engine.create("idle", {"action": "ok"}), timeout=20)  # an idle worker too
        hung_pid = until(lambda: read_pid(tmp_path / "hung-1.pid"))
        started = time.monotonic()
        engine.stop(timeout=1)
        elapsed = time.monotonic() - started
        assert elapsed < 5.0, elapsed
        assert not worker_pids()
        assert is_gone(hung_pid)
        with pytest.raises(taskengine.EngineStoppedError):
            engine.create("hangs", None)
        # The cut-short attempt counts as crashed and stays retryable.
        record = store.get(task_id)
        assert record is not None
        assert record.status is Status.PENDING
        assert record.attempts == 1
        assert record.error is not None
        assert record.error.type == "WorkerCrashedError"
        assert "stopped" in record.error.message
    finally:
        stop_and_check(engine)


@pytest.mark.parametrize("method", ["shutdown_raise", "shutdown_hang"])
def test_misbehaving_shutdown_method_during_stop(
    method: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """faults.md#fault-10: stop returns within its timeout + a few seconds, no worker is left."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(faulty.MARKER_DIR_ENV, str(markers))
    # The markers show that the shutdown method really ran.  "spawn", for once (forkserver is
    # the default).
    engine = make_engine(start_method="spawn")
    try:
        engine.register_handler("shuts", FAULTY, "action", shutdown_method=method)
        pid = engine.wait(engine.create("shuts", {"action": "pid"}), timeout=30).result
        caplog.set_level(logging.ERROR, logger="taskengine")
        started = time.monotonic()
        engine.stop(timeout=1)
        elapsed = time.monotonic() - started
        assert elapsed < 1 + 4.0, elapsed
        assert not worker_pids()
        assert is_gone(pid)
        assert (markers / f"shutdown-{pid}").exists()
        if method == "shutdown_raise":
            assert "shutdown exploded" in caplog.text  # logged, never swallowed silently
    finally:
        stop_and_check(engine)


def test_shutdown_method_raising_at_idle_shutdown_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """faults.md#fault-10: an idle shutdown whose method raises is logged; the pool carries on."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(faulty.MARKER_DIR_ENV, str(markers))
    caplog.set_level(logging.ERROR, logger="taskengine")
    engine = make_engine(start_method="spawn")
    try:
        engine.register_handler(
            "shuts", FAULTY, "action", shutdown_method="shutdown_raise", idle_shutdown_timeout=0
        )
        first = engine.wait(engine.create("shuts", {"action": "pid"}), timeout=30).result
        until(lambda: is_gone(first), timeout=10)
        until(lambda: "shutdown exploded" in caplog.text, timeout=10)
        assert (markers / f"shutdown-{first}").exists()
        second = engine.wait(engine.create("shuts", {"action": "pid"}), timeout=30)
        assert second.status is Status.SUCCESS
        assert second.result != first
        assert_responsive(engine)
    finally:
        stop_and_check(engine)


def test_a_fake_clock_moves_execution_timeouts(tmp_path: Path) -> None:
    """With an injected FakeClock, ``advance`` past an attempt's execution deadline times it
    out at once, long before the timeout passes in real time."""
    clock = FakeClock()
    eng = taskengine.TaskEngine(taskengine.MemoryStore(), clock=clock).start()
    try:
        eng.register_handler("hangs", FAULTY, "action", execution_timeout=60)
        payload = {"action": "hang", "pid_dir": str(tmp_path), "name": "worker"}
        task_id = eng.create("hangs", payload, retry_count=0)
        worker_pid = until(lambda: read_pid(tmp_path / "worker-1.pid"))
        started = time.monotonic()
        clock.advance(61)
        done = eng.wait(task_id, timeout=GRACE + SLACK + 5)
        assert time.monotonic() - started < GRACE + SLACK + 5  # not the real 60 s
        assert done.status is Status.FAILED
        assert done.error is not None
        assert done.error.type == "TaskTimeoutError"
        until(lambda: is_gone(worker_pid), timeout=5)
    finally:
        eng.stop(timeout=10)
