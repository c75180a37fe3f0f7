"""Engine behaviours that cut across the API: polling, module checks, removal races."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import taskengine
from tests.conftest import until


def test_tasks_created_by_another_engine_are_found_by_polling(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with taskengine.TaskEngine(taskengine.SqliteStore(path)) as dispatcher:
        dispatcher.register_handler("echo", "tests.handlers.basic", "echo")
        assert dispatcher.wait(dispatcher.create("echo", 0), timeout=30).status == "success"
        # A second engine that never starts (a CLI, say) writes into the same file; the
        # dispatching engine is idle and hears nothing, so only its poll can find the task.
        writer = taskengine.TaskEngine(taskengine.SqliteStore(path))
        task_id = writer.create("echo", "from elsewhere", retain_for=None)
        writer.stop(timeout=1)
        done = until(lambda: (t := dispatcher.get(task_id)) is not None and t.status.is_final)
        assert done
        assert dispatcher.get(task_id).result == "from elsewhere"


def test_registering_never_imports_the_handler_module_or_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "lazypkg"
    package.mkdir()
    marker = tmp_path / "imported-by"
    init = f"""
        import os
        with open({str(marker)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
    """
    (package / "__init__.py").write_text(textwrap.dedent(init))
    (package / "jobs.py").write_text("def run(payload):\n    return payload * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with taskengine.TaskEngine() as engine:
        engine.register_handler("double", "lazypkg.jobs", "run")
        assert not marker.exists()
        assert "lazypkg" not in sys.modules
        assert engine.wait(engine.create("double", 21), timeout=30).result == 42
    pids = {int(line) for line in marker.read_text().split()}
    assert pids
    assert os.getpid() not in pids


def test_remove_of_a_processing_task_terminates_its_attempt(
    memory_engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    memory_engine.register_handler("sleepy", "tests.handlers.basic", "sleep")
    task_id = memory_engine.create("sleepy", {"seconds": 60}, retain_for=None)
    until(lambda: memory_engine.get(task_id).status is taskengine.TaskStatus.PROCESSING)
    assert memory_engine.remove(task_id) is True
    assert memory_engine.get(task_id) is None
    # The worker is killed, so a new attempt of the same type runs at once.
    after = memory_engine.create("sleepy", {"seconds": 0, "value": "next"})
    assert memory_engine.wait(after, timeout=30).result == "next"


def test_workers_see_the_environment_of_when_they_started(
    memory_engine: taskengine.TaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_engine.register_handler("pid", "tests.handlers.basic", "pid")
    memory_engine.wait(memory_engine.create("pid"), timeout=30)  # the fork server is running now
    monkeypatch.setenv("TASKENGINE_TEST_LATE_VARIABLE", "set after the first worker")
    memory_engine.register_handler("env", "tests.handlers.basic", "env")
    task_id = memory_engine.create("env", "TASKENGINE_TEST_LATE_VARIABLE")
    assert memory_engine.wait(task_id, timeout=30).result == "set after the first worker"


def test_a_registration_applies_before_register_handler_returns(
    memory_engine: taskengine.TaskEngine,
) -> None:
    for round_number in range(20):
        method = "echo" if round_number % 2 else "pid"
        memory_engine.register_handler("switch", "tests.handlers.basic", method)
        result = memory_engine.wait(memory_engine.create("switch", "x"), timeout=30).result
        assert (result == "x") == (method == "echo")


def test_stop_wakes_a_thread_waiting_without_timeout() -> None:
    engine = taskengine.TaskEngine()
    engine.start()
    task_id = engine.create("never-handled", None, retain_for=None)
    outcome: list[BaseException] = []
    subscribed = threading.Event()

    def waiter() -> None:
        subscribed.set()
        try:
            engine.wait(task_id)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    subscribed.wait(5)
    until(lambda: engine._publisher._waiters or outcome)  # the waiter is registered
    engine.stop(timeout=5)
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], taskengine.EngineStoppedError)


def test_stop_from_inside_a_state_change_callback_does_not_deadlock() -> None:
    engine = taskengine.TaskEngine()
    stopped = threading.Event()

    def stop_on_success(task: taskengine.BackgroundTask) -> None:
        if task.status is taskengine.TaskStatus.SUCCESS:
            engine.stop(timeout=5)
            stopped.set()

    engine.register_handler("echo", "tests.handlers.basic", "echo", stop_on_success)
    engine.start()
    engine.create("echo", 1)
    assert stopped.wait(30)
    with pytest.raises(taskengine.EngineStoppedError):
        engine.create("echo", 2)


def test_wait_never_reports_unknown_for_a_task_deleted_but_not_yet_announced(
    memory_engine: taskengine.TaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retain_for=0: the commit that finishes a task deletes it, and the announcement (which
    fills the finished-task cache) follows under the writer's lock.  A wait() that reads the
    store in between must wait for the announcement instead of raising TaskNotFoundError.
    """
    publisher = memory_engine._publisher
    original = publisher.publish
    deleted = threading.Event()

    def slow_publish(changes):  # type: ignore[no-untyped-def]
        changes = list(changes)
        if any(task.status.is_final for task, _ in changes):
            deleted.set()  # the row is gone; widen the window before the announcement
            time.sleep(0.3)
        original(changes)

    monkeypatch.setattr(publisher, "publish", slow_publish)
    memory_engine.register_handler("echo", "tests.handlers.basic", "echo")
    task_id = memory_engine.create("echo", "fast")  # retain_for=0 by default
    assert deleted.wait(30)
    assert memory_engine.get(task_id) is None
    assert memory_engine.wait(task_id, timeout=30).result == "fast"
