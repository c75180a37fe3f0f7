"""faults.md#fault-38: hostile arguments to constructors, ``stop``, ``BackgroundTask.from_json``.

Only ``TaskValidationError`` naming the argument (or a success) may come out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taskengine
from tests.fuzz.strategies import junk, junk_or

ENGINE_OPTIONS = {
    "store": (None,),
    "node_identity": (None, "node"),
    "retry_interval": (5.0, 0),
    "max_total_workers": (None, 2),
    "clock": (None,),
    "start_method": (None, "spawn"),
    "max_payload_bytes": (1024,),
}


def _refused(argument: str, exc: BaseException) -> None:
    assert isinstance(exc, taskengine.TaskValidationError)
    assert exc.argument.split(".")[0] == argument, (exc.argument, argument)
    assert len(str(exc)) < 2000


@given(st.data())
def test_engine_constructor(data: st.DataObject) -> None:
    argument = data.draw(st.sampled_from(list(ENGINE_OPTIONS)))
    value = data.draw(junk())
    try:
        engine = taskengine.TaskEngine(**{argument: value})
    except taskengine.TaskValidationError as exc:
        _refused(argument, exc)
        return
    engine.stop()


@given(junk())
def test_stop_timeout(value: Any) -> None:
    engine = taskengine.TaskEngine()
    try:
        engine.stop(timeout=value)
    except taskengine.TaskValidationError as exc:
        _refused("timeout", exc)
        engine.stop()  # still stoppable


@given(st.sampled_from(["path", "synchronous", "busy_timeout"]), junk())
def test_sqlite_store_constructor(tmp_path_factory: Any, argument: str, value: Any) -> None:
    arguments: dict[str, Any] = {"path": "unused.db", "synchronous": "full", "busy_timeout": 1.0}
    arguments[argument] = value
    before = set(os.listdir("."))
    try:
        taskengine.SqliteStore(arguments.pop("path"), **arguments)
    except taskengine.TaskValidationError as exc:
        _refused(argument, exc)
    assert set(os.listdir(".")) == before  # the constructor never touches the disk


def test_memory_store_constructor_takes_no_arguments() -> None:
    with pytest.raises(TypeError):
        taskengine.MemoryStore(1)  # type: ignore[call-arg]


def _valid_json() -> dict[str, Any]:
    engine = taskengine.TaskEngine()
    try:
        task_id = engine.create("fuzz", {"a": 1}, retain_for=None)
        task = engine.get(task_id)
        assert task is not None
        return task.to_json()
    finally:
        engine.stop()


VALID = _valid_json()


@given(st.sampled_from(sorted(VALID)), junk_or(None))
def test_from_json_one_field(key: str, value: Any) -> None:
    data = dict(VALID, **{key: value})
    try:
        task = taskengine.BackgroundTask.from_json(data)
    except taskengine.TaskValidationError as exc:
        _refused(exc.argument.split(".")[0], exc)
        return
    assert task.id == data["id"]


@given(st.sampled_from(sorted(VALID)))
def test_from_json_missing_field(key: str) -> None:
    data = {k: v for k, v in VALID.items() if k != key}
    with pytest.raises(taskengine.TaskValidationError):
        taskengine.BackgroundTask.from_json(data)


@given(junk())
def test_from_json_not_an_object(value: Any) -> None:
    with pytest.raises(taskengine.TaskValidationError):
        taskengine.BackgroundTask.from_json(value)


@given(st.integers(1, 3000), st.sampled_from(["cause", "error"]))
def test_from_json_deeply_nested_error(depth: int, where: str) -> None:
    error: dict[str, Any] = {"type": "E", "message": "m", "traceback": None, "cause": None}
    for _ in range(depth):
        error = {"type": "E", "message": "m", "traceback": None, "cause": error}
    data = dict(VALID, status="failed", error=error)
    try:
        taskengine.BackgroundTask.from_json(data)
    except taskengine.TaskValidationError as exc:
        _refused("error", exc)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_sqlite_store_refuses_an_unhashable_synchronous() -> None:
    """Regression: ``synchronous=[]`` raised TypeError (unhashable) from the lookup."""
    with pytest.raises(taskengine.TaskValidationError, match="synchronous"):
        taskengine.SqliteStore("unused.db", synchronous=[])  # type: ignore[arg-type]


def test_from_json_refuses_a_cause_chain_deeper_than_the_limit() -> None:
    """Regression: a 5000-deep ``cause`` chain raised RecursionError."""
    error: dict[str, Any] = {"type": "E", "message": "m", "traceback": None, "cause": None}
    for _ in range(5000):
        error = {"type": "E", "message": "m", "traceback": None, "cause": error}
    with pytest.raises(taskengine.TaskValidationError, match="nested deeper"):
        taskengine.BackgroundTask.from_json(dict(VALID, status="failed", error=error))


def test_engine_refuses_max_payload_bytes_none() -> None:
    """Regression: ``max_payload_bytes=None`` failed an internal assert (AssertionError)."""
    with pytest.raises(taskengine.TaskValidationError, match="max_payload_bytes"):
        taskengine.TaskEngine(max_payload_bytes=None)  # type: ignore[arg-type]
