"""faults.md#fault-14 to #fault-19: payloads, results and exceptions that fail to (un)pickle."""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import taskengine
from taskengine.core import codec
from taskengine.stores import base
from tests.faults.conftest import FAULTY, assert_responsive, count_tasks
from tests.handlers import faulty

Status = taskengine.TaskStatus


def _pid_of_only_worker(engine: taskengine.TaskEngine, task_type: str) -> int:
    done = engine.wait(engine.create(task_type, {"action": "pid"}), timeout=20)
    assert done.status is Status.SUCCESS
    return int(done.result)


@pytest.fixture
def serde(eng: taskengine.TaskEngine) -> taskengine.TaskEngine:
    """``eng`` with a one-worker pool of type "serde" running the faulty handler."""
    eng.register_handler("serde", FAULTY, "action", max_worker_count=1)
    return eng


# -- 14/15: the payload breaks while the worker unpickles it --------------------------------


def test_payload_unpickling_error_is_reported_from_the_worker(
    serde: taskengine.TaskEngine,
) -> None:
    worker = _pid_of_only_worker(serde, "serde")
    task_id = serde.create("serde", faulty.ErrorAtUnpickle(), retry_count=0)
    done = serde.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "UnpicklingError"
    assert "ErrorAtUnpickle refuses to load" in done.error.message
    assert f"raised in pid {worker}" in done.error.message  # the worker's own message
    assert done.error.traceback is not None
    assert _pid_of_only_worker(serde, "serde") == worker  # the worker survived
    assert_responsive(serde)


def test_payload_naming_a_module_missing_in_the_worker(
    serde: taskengine.TaskEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker starts first, so the folder that holds the module is not on its sys.path.
    worker = _pid_of_only_worker(serde, "serde")
    name = f"ghost_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("class Ghost:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    payload = importlib.import_module(name).Ghost()  # pickled by reference to its module
    task_id = serde.create("serde", payload, retry_count=0)
    done = serde.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "ModuleNotFoundError"
    assert name in done.error.message
    assert _pid_of_only_worker(serde, "serde") == worker
    assert_responsive(serde)


def test_payload_calling_os_exit_while_unpickled_is_a_crash(
    serde: taskengine.TaskEngine,
) -> None:
    """faults.md#fault-15: the crash path; the coordinator is untouched."""
    worker = _pid_of_only_worker(serde, "serde")
    task_id = serde.create("serde", faulty.ExitAtUnpickle(5), retry_count=0)
    done = serde.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "WorkerCrashedError"
    assert "code 5" in done.error.message
    assert _pid_of_only_worker(serde, "serde") != worker  # replaced
    assert_responsive(serde)


def test_payload_raising_system_exit_while_unpickled_is_a_handler_error(
    serde: taskengine.TaskEngine,
) -> None:
    """faults.md#fault-15: SystemExit at unpickling is caught like one in a handler (#fault-3)."""
    worker = _pid_of_only_worker(serde, "serde")
    task_id = serde.create("serde", faulty.SysExitAtUnpickle(6), retry_count=0)
    done = serde.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "SystemExit"
    assert done.error.message == "6"
    assert _pid_of_only_worker(serde, "serde") == worker
    assert_responsive(serde)


# -- 16: the payload cannot be pickled at create ---------------------------------------------


def _generator() -> Iterator[int]:
    yield 1


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(threading.Lock, id="lock"),
        pytest.param(_generator, id="generator"),
        pytest.param(lambda: _deep(100_000), id="recursion-100000"),
        pytest.param(faulty.ErrorAtPickle, id="reduce-raises-ValueError"),
        pytest.param(lambda: {"nested": [1, threading.Lock()]}, id="lock-inside"),
    ],
)
def test_unpicklable_payload_is_refused_and_nothing_is_stored(
    engine: taskengine.TaskEngine, make: Any
) -> None:
    engine.create("kept", "before", retain_for=None)
    before = count_tasks(engine)
    payload = make()
    with pytest.raises(taskengine.TaskValidationError) as caught:
        engine.create("refused", payload)
    assert caught.value.argument == "payload"
    assert "cannot be pickled" in str(caught.value)
    with pytest.raises(taskengine.TaskValidationError):
        engine.create_many("refused", ["fine", payload, "fine"])
    assert count_tasks(engine) == before
    assert count_tasks(engine, task_type="refused") == 0
    assert_responsive(engine)


def test_system_exit_from_reduce_propagates_and_nothing_is_stored(
    engine: taskengine.TaskEngine,
) -> None:
    before = count_tasks(engine)
    with pytest.raises(SystemExit) as caught:
        engine.create("refused", faulty.SystemExitAtPickle())
    assert caught.value.code == 42
    with pytest.raises(SystemExit):
        engine.create_many("refused", ["fine", faulty.SystemExitAtPickle()])
    assert count_tasks(engine) == before
    assert_responsive(engine)


# -- 17: the result cannot be pickled in the worker ------------------------------------------


@pytest.mark.parametrize("action", ["bad_result", "generator_result"])
def test_unpicklable_result_is_an_error_and_the_worker_survives(
    serde: taskengine.TaskEngine, action: str
) -> None:
    worker = _pid_of_only_worker(serde, "serde")
    task_id = serde.create("serde", {"action": action}, retry_count=1, retry_interval=0.05)
    done = serde.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.attempts == 2  # retries apply
    assert done.error is not None
    assert done.error.type in {"TypeError", "PicklingError"}
    assert "the result could not be serialised" in done.error.message
    assert _pid_of_only_worker(serde, "serde") == worker
    assert_responsive(serde)


# -- 18: the handler raises an exception that does not pickle --------------------------------


@pytest.mark.parametrize(
    ("action", "error_type", "message"),
    [
        ("bad_exception", "BadInitSignatureError", "bad-init error 7: custom signature"),
        ("unpicklable_exception", "UnpicklableAttributeError", "carries a lock"),
        ("broken_str_exception", "BrokenStrError", "<unprintable BrokenStrError>"),
    ],
)
def test_exception_that_cannot_cross_processes_becomes_plain_data(
    serde: taskengine.TaskEngine, action: str, error_type: str, message: str
) -> None:
    worker = _pid_of_only_worker(serde, "serde")
    task_id = serde.create("serde", {"action": action}, retry_count=0)
    done = serde.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == error_type
    assert done.error.message == message
    assert done.error.traceback is not None
    assert "tests/handlers/faulty.py" in done.error.traceback
    assert _pid_of_only_worker(serde, "serde") == worker
    assert_responsive(serde)


def test_chained_unpicklable_exceptions_keep_their_cause(serde: taskengine.TaskEngine) -> None:
    task_id = serde.create("serde", {"action": "chained_bad_exception"}, retry_count=0)
    done = serde.wait(task_id, timeout=20)
    assert done.error is not None
    assert done.error.type == "BadInitSignatureError"
    assert done.error.cause is not None
    assert done.error.cause.type == "UnpicklableAttributeError"
    assert done.error.cause.message == "inner cause"


# -- 19: a stored blob that cannot be decoded in the coordinator ------------------------------


def _other_python_blob() -> bytes:
    blob = codec.encode({"action": "ok"})
    return blob[:3] + bytes((3, 99)) + blob[5:]


def _plant(engine: taskengine.TaskEngine, task_id: str, **changes: Any) -> None:
    """Replace a stored pending task's record behind the engine's back (a hand-edited row)."""
    task = engine.store.get(task_id)
    assert task is not None
    planted = attrs.evolve(task, **changes)
    write = base.Update(task=planted, expected_status=task.status, expected_attempts=task.attempts)
    assert engine.store.apply([write]) == [True]


def test_undecodable_stored_payloads_are_reported_per_task(
    engine: taskengine.TaskEngine,
) -> None:
    good = engine.create("planted", {"action": "ok", "value": 1}, retain_for=None, retry_count=0)
    corrupt = engine.create("planted", {"action": "ok"}, retain_for=None, retry_count=0)
    foreign = engine.create("planted", {"action": "ok"}, retain_for=None, retry_count=0)
    _plant(engine, corrupt, payload_blob=b"\x00garbage bytes, not a pickle")
    _plant(engine, foreign, payload_blob=_other_python_blob())

    for task_id, reason in [(corrupt, "bad header"), (foreign, "Python 3.99")]:
        task = engine.get(task_id)
        assert task is not None  # the record itself is readable
        assert task.status is Status.PENDING
        assert task.type == "planted"
        with pytest.raises(taskengine.StoreError) as caught:
            _ = task.payload
        assert task_id in str(caught.value)
        assert reason in str(caught.value)
    page = engine.query(task_type="planted", page_size=10)
    assert {t.id for t in page.entities} == {good, corrupt, foreign}
    good_task = engine.get(good)
    assert good_task is not None
    assert good_task.payload == {"action": "ok", "value": 1}

    # Running them: the worker reports the decode error per task; the good one succeeds.
    engine.register_handler("planted", FAULTY, "action")
    assert engine.wait(good, timeout=20).result == 1
    for task_id, reason in [(corrupt, "bad header"), (foreign, "Python 3.99")]:
        done = engine.wait(task_id, timeout=20)
        assert done.status is Status.FAILED
        assert done.error is not None
        assert done.error.type == "BlobFormatError"
        assert reason in done.error.message
    assert_responsive(engine)


def test_undecodable_stored_result_is_reported_per_task(engine: taskengine.TaskEngine) -> None:
    engine.register_handler("planted", FAULTY, "action")
    bad = engine.create("planted", {"action": "ok", "value": 2}, retain_for=None)
    fine = engine.create("planted", {"action": "ok", "value": 3}, retain_for=None)
    assert engine.wait(bad, timeout=20).result == 2
    assert engine.wait(fine, timeout=20).result == 3
    _plant(engine, bad, result_blob=_other_python_blob())
    task = engine.get(bad)
    assert task is not None
    assert task.status is Status.SUCCESS
    with pytest.raises(taskengine.StoreError) as caught:
        _ = task.result
    assert bad in str(caught.value)
    assert "Python 3.99" in str(caught.value)
    assert engine.wait(bad, timeout=5).status is Status.SUCCESS  # wait still returns it
    fine_task = engine.get(fine)
    assert fine_task is not None
    assert fine_task.result == 3
    assert_responsive(engine)


def test_result_that_exits_while_pickled_is_a_crash(serde: taskengine.TaskEngine) -> None:
    """faults.md#fault-17: an exit while pickling the result takes the crash path."""
    task_id = serde.create("serde", {"action": "exit_in_result"}, retry_count=0)
    done = serde.wait(task_id, timeout=20)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "WorkerCrashedError"
    assert "code 4" in done.error.message
    assert _pid_of_only_worker(serde, "serde") > 0  # replaced, and working
    assert_responsive(serde)
