"""faults.md#fault-38 to #fault-39: hostile arguments to every public method and parser.

Each test feeds ``junk()`` to one argument at a time (the others valid) and accepts only:
success (the value happened to be valid), ``TaskValidationError`` naming that argument with a
short message, or the documented answer (``get`` -> None; ``retry``/``cancel``/``remove`` ->
False; ``register_handler`` -> ``HandlerNotFoundError`` for a module that does not exist).  After
every refused call the task table is unchanged (row count and a canary task), and after each
test the engine still runs a task.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taskengine
from taskengine.stores import base
from tests.conftest import until, worker_pids
from tests.fuzz.strategies import SQL, junk, junk_or

BASIC = "tests.handlers.basic"
#: A TaskValidationError message stays short, whatever the size of the value.
MAX_MESSAGE = 2000
FAR = datetime(2999, 1, 1, tzinfo=UTC)


class Target:
    """A started engine with a canary task, and the checks every call goes through."""

    def __init__(self, engine: taskengine.TaskEngine) -> None:
        self.engine = engine
        engine.register_handler("echo", BASIC, "echo")
        self.canary = engine.create("canary", {"keep": "me"}, retain_for=None, run_at=FAR)
        self.canary_task = engine.get(self.canary)
        self.done = engine.create("echo", "done", retain_for=None)
        assert engine.wait(self.done, timeout=30).status is taskengine.TaskStatus.SUCCESS

    def count(self) -> int:
        total, cursor = 0, None
        while True:
            page = self.engine.query(cursor=cursor, page_size=1000)
            total += len(page.entities)
            cursor = page.cursor
            if cursor is None:
                return total

    def call(self, argument: str, call: Callable[[], Any], *documented: Any) -> Any:
        """Run ``call``; a refusal must name ``argument`` and store nothing."""
        before = self.count()
        try:
            value = call()
        except taskengine.TaskValidationError as exc:
            value = exc
        if isinstance(value, taskengine.TaskValidationError):
            assert value.argument.split(".")[0] == argument, (value.argument, argument)
            assert len(str(value)) < MAX_MESSAGE
            assert self.count() == before
            assert self.engine.get(self.canary) == self.canary_task
            return value
        if documented:
            assert value in documented, value
        return value

    def healthy(self) -> None:
        task_id = self.engine.create("echo", "ping", retry_count=0)
        assert self.engine.wait(task_id, timeout=30).result == "ping"
        assert self.engine.get(self.canary) == self.canary_task


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    if request.param == "memory":
        store: base.TaskStore = taskengine.MemoryStore()
    else:
        store = taskengine.SqliteStore(tmp_path_factory.mktemp("fuzz") / "tasks.db")
    engine = taskengine.TaskEngine(store, retry_interval=0).start()
    here = Target(engine)
    yield here
    here.healthy()
    engine.stop(timeout=10)
    until(lambda: not worker_pids(), timeout=10)


def _cleanup(target: Target, value: Any) -> None:
    """Remove what a call that happened to be valid created (keep the table small)."""
    ids = value if isinstance(value, list) else [value]
    for task_id in ids:
        if isinstance(task_id, str):
            target.engine.remove(task_id)


# -- create / create_many -----------------------------------------------------------------

CREATE_OPTIONS = {
    "retry_count": (None, 0, 3),
    "retry_interval": (None, 0, 1.5, timedelta(seconds=2)),
    "retain_for": (None, 0, -1, 10),
    "run_at": (None, FAR),
    "idempotency_key": (None,),
}


@given(st.data())
def test_create_refuses_bad_arguments(target: Target, data: st.DataObject) -> None:
    argument = data.draw(st.sampled_from(["task_type", *CREATE_OPTIONS]))
    value = data.draw(junk())
    options: dict[str, Any] = {"run_at": FAR}
    if argument == "task_type":
        out = target.call(argument, lambda: target.engine.create(value, None, **options))
    else:
        options[argument] = value
        out = target.call(argument, lambda: target.engine.create("fuzz", None, **options))
    _cleanup(target, out)


@given(st.data())
def test_create_many_refuses_bad_arguments(target: Target, data: st.DataObject) -> None:
    argument = data.draw(st.sampled_from(["task_type", "payloads", *CREATE_OPTIONS]))
    argument = "retry_count" if argument == "idempotency_key" else argument
    value = data.draw(junk())
    options: dict[str, Any] = {"run_at": FAR}
    task_type: Any = "fuzz"
    payloads: Any = [1, 2]
    if argument == "task_type":
        task_type = value
    elif argument == "payloads":
        payloads = value
    else:
        options[argument] = value
    out = target.call(argument, lambda: target.engine.create_many(task_type, payloads, **options))
    _cleanup(target, out)


# -- reads and changes by id --------------------------------------------------------------


@given(junk())
def test_get_and_changes_by_id(target: Target, value: Any) -> None:
    engine = target.engine
    target.call("task_id", lambda: engine.get(value), None)
    target.call("task_id", lambda: engine.retry(value), False)
    target.call("task_id", lambda: engine.cancel(value), False)
    target.call("task_id", lambda: engine.cancel(value, terminate=True), False)
    target.call("task_id", lambda: engine.remove(value), False)


@given(junk(), junk())
def test_wait_refuses_bad_arguments(target: Target, task_id: Any, timeout: Any) -> None:
    engine = target.engine

    def wait_unknown() -> Any:
        try:
            return engine.wait(task_id, timeout=1)
        except taskengine.TaskNotFoundError:
            return "unknown"

    target.call("task_id", wait_unknown, "unknown")
    # On a finished task a valid timeout returns at once, so no value can block the test.
    out = target.call("timeout", lambda: engine.wait(target.done, timeout=timeout))
    if not isinstance(out, taskengine.TaskValidationError):
        assert out.status is taskengine.TaskStatus.SUCCESS


@given(junk())
def test_cancel_terminate_must_be_a_bool(target: Target, value: Any) -> None:
    out = target.call("terminate", lambda: target.engine.cancel(target.done, terminate=value))
    assert out is False or isinstance(out, taskengine.TaskValidationError)


# -- query and cursors ----------------------------------------------------------------------

QUERY_DEFAULTS: dict[str, Any] = {
    "task_type": None,
    "status": None,
    "sort_property": "date_created",
    "sort_direction": "asc",
    "cursor": None,
    "page_size": 20,
}


@given(st.data())
def test_query_refuses_bad_arguments(target: Target, data: st.DataObject) -> None:
    argument = data.draw(st.sampled_from(list(QUERY_DEFAULTS)))
    value = data.draw(junk_or(*SQL))
    arguments = dict(QUERY_DEFAULTS, **{argument: value})
    out = target.call(argument, lambda: target.engine.query(**arguments))
    assert isinstance(out, taskengine.TaskValidationError | taskengine.QueryResult)


def _cursor_body(cursor: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))


def _encode(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


@given(st.sampled_from(["v", "q", "k", "i"]), junk(), st.integers(0, 200), st.text(max_size=3))
def test_tampered_cursors_are_refused(
    target: Target, key: str, value: Any, cut: int, splice: str
) -> None:
    page = target.engine.query(page_size=1)
    assert page.cursor is not None
    body = _cursor_body(page.cursor)
    try:
        body[key] = value
        forged = _encode(body)
    except (TypeError, ValueError, OverflowError):
        forged = _encode({**body, key: repr(value)})
    for cursor in (forged, page.cursor[:cut] + splice + page.cursor[cut:]):
        out = target.call("cursor", lambda c=cursor: target.engine.query(cursor=c, page_size=1))
        if not isinstance(out, taskengine.TaskValidationError):
            assert len(out.entities) <= 1
    # A cursor of another query or sort is refused.
    other = target.call(
        "cursor", lambda: target.engine.query(cursor=page.cursor, sort_direction="desc")
    )
    assert isinstance(other, taskengine.TaskValidationError)


# -- handlers -------------------------------------------------------------------------------

REGISTER_OPTIONS = {
    "state_change_callback": (None, print),
    "max_worker_count": (1, None),
    "idle_shutdown_timeout": (60.0, 0, None),
    "initialise_method": (None,),
    "shutdown_method": (None,),
    "execution_timeout": (None, 5),
    "max_tasks_per_worker": (None, 3),
    "max_memory_per_worker": (None, 10**9),
}


@given(st.data())
def test_register_handler_refuses_bad_arguments(target: Target, data: st.DataObject) -> None:
    argument = data.draw(st.sampled_from(["task_type", "module", "method", *REGISTER_OPTIONS]))
    value = data.draw(junk())
    arguments: dict[str, Any] = {"task_type": "fuzz-handler", "module": BASIC, "method": "echo"}
    arguments[argument] = value
    engine = target.engine

    def register() -> Any:
        try:
            engine.register_handler(**arguments)
        except taskengine.HandlerNotFoundError:
            return "not found"
        return "registered"

    out = target.call(argument, register)
    if out == "registered":
        engine.unregister_handler(arguments["task_type"])
    else:
        assert out == "not found" or isinstance(out, taskengine.TaskValidationError)


@given(junk())
def test_unregister_handler_refuses_bad_arguments(target: Target, value: Any) -> None:
    def unregister() -> Any:
        try:
            target.engine.unregister_handler(value)
        except taskengine.HandlerNotFoundError:
            return "not found"
        return "unregistered"

    out = target.call("task_type", unregister)
    assert out == "not found" or isinstance(out, taskengine.TaskValidationError)


def test_an_id_with_a_lone_surrogate_is_unknown(target: Target) -> None:
    """Regression: on SQLite, ``get("\\ud800")`` raised StoreError (the driver cannot encode
    it) instead of answering None like any other unknown id."""
    engine = target.engine
    assert engine.get("\ud800") is None
    assert engine.retry("a\udfffb") is False
    assert engine.cancel("\ud800", terminate=True) is False
    assert engine.remove("\ud800") is False
    with pytest.raises(taskengine.TaskNotFoundError):
        engine.wait("\ud800", timeout=1)
