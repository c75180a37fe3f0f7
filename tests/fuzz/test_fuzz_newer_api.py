"""faults.md#fault-38 for the public names added after the first fuzz suite: inline execution, the
scheduler, ``AsyncTaskEngine`` and ``PostgresStore``'s constructor.

As in ``test_fuzz_api.py``: one hostile argument at a time, the others valid; only success or
``TaskValidationError`` naming that argument (with a short message) may come out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taskengine
from tests.fuzz.strategies import junk, junk_or

MAX_MESSAGE = 2000


def _refused(argument: str, exc: BaseException) -> None:
    assert isinstance(exc, taskengine.TaskValidationError), repr(exc)
    assert exc.argument.split(".")[0] == argument, (exc.argument, argument)
    assert len(str(exc)) < MAX_MESSAGE


@given(junk_or("processes", "inline"))
def test_engine_execution_option(value: Any) -> None:
    try:
        engine = taskengine.TaskEngine(execution=value)
    except taskengine.TaskValidationError as exc:
        _refused("execution", exc)
        return
    assert engine.execution in ("processes", "inline")
    engine.stop()


@pytest.fixture(scope="module")
def inline() -> Iterator[taskengine.TaskEngine]:
    engine = taskengine.TaskEngine(taskengine.MemoryStore(), execution="inline")
    engine.register_handler("echo", "tests.handlers.basic", "echo")
    yield engine
    engine.stop()


@given(junk())
def test_run_until_idle_max_attempts(inline: taskengine.TaskEngine, value: Any) -> None:
    task_id = inline.create("echo", "x", retain_for=None)
    try:
        ran = inline.run_until_idle(max_attempts=value)
    except taskengine.TaskValidationError as exc:
        _refused("max_attempts", exc)
        assert inline.get(task_id).status is taskengine.TaskStatus.PENDING  # nothing ran
        inline.run_until_idle()
    else:
        assert ran == 1
    assert inline.get(task_id).status is taskengine.TaskStatus.SUCCESS
    assert inline.stats().of("echo").pending == 0


SCHEDULER_OPTIONS = {"engine_or_store": (None,), "clock": (None,), "callback_threads": (1, 4)}


@given(st.data())
def test_scheduler_constructor(data: st.DataObject) -> None:
    argument = data.draw(st.sampled_from(list(SCHEDULER_OPTIONS)))
    value = data.draw(junk())
    try:
        scheduler = taskengine.TaskScheduler(**{argument: value})
    except taskengine.TaskValidationError as exc:
        _refused(argument, exc)
        return
    scheduler.stop()


TIME_FIELDS = (
    "next_trigger_time",
    "interval_days",
    "interval_hours",
    "interval_minutes",
    "interval_seconds",
    "cron",
    "tz",
)


@given(st.sampled_from(TIME_FIELDS), junk_or(*taskengine.__all__))
def test_scheduled_task_time_fields(field: str, value: Any) -> None:
    valid: dict[str, Any] = {"interval_seconds": 60}
    if field in ("cron", "tz"):
        valid = {"cron": "*/5 * * * *"}
    try:
        times = taskengine.ScheduledTaskTime(**{**valid, field: value})
    except taskengine.TaskValidationError as exc:
        _refused(field, exc)
        return
    assert isinstance(times, taskengine.ScheduledTaskTime)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[taskengine.TaskScheduler]:
    made = taskengine.TaskScheduler().start()
    yield made
    made.stop()


@given(st.sampled_from(["task_id", "times", "callback"]), junk())
def test_add_task_and_remove_task(
    scheduler: taskengine.TaskScheduler, argument: str, value: Any
) -> None:
    arguments: dict[str, Any] = {
        "task_id": "fuzz",
        "times": taskengine.ScheduledTaskTime(interval_days=1),
        "callback": lambda: None,
    }
    arguments[argument] = value
    before = scheduler.tasks_info()
    try:
        scheduler.add_task(arguments["task_id"], arguments["times"], arguments["callback"])
    except taskengine.TaskValidationError as exc:
        _refused(argument, exc)
        assert scheduler.tasks_info() == before  # nothing added or replaced
    else:
        assert scheduler.remove_task(arguments["task_id"]) is True
    try:
        assert scheduler.remove_task(value) in (False, True)
    except taskengine.TaskValidationError as exc:
        _refused("task_id", exc)


@given(junk())
def test_async_engine_refuses_bad_arguments(value: Any) -> None:
    async def scenario() -> None:
        try:
            taskengine.AsyncTaskEngine(value)
        except taskengine.TaskValidationError as exc:
            _refused("engine", exc)
        async with taskengine.AsyncTaskEngine() as engine:
            for argument, call in (
                ("task_type", lambda: engine.create(value)),
                ("task_id", lambda: engine.get(value)),
                ("page_size", lambda: engine.query(page_size=value)),
            ):
                try:
                    await call()
                except taskengine.TaskValidationError as exc:
                    _refused(argument, exc)
            # Only a value that happened to be a valid task type created a task.
            created = (await engine.query()).entities
            assert len(created) == (1 if isinstance(value, str) and created else 0)
            assert (await engine.stats()).count("pending") == len(created)

    asyncio.run(scenario())


POSTGRES_OPTIONS = {
    "dsn": ("postgresql://127.0.0.1:1/none",),
    "schema": ("taskengine",),
    "lease_timeout": (30.0,),
    "heartbeat_interval": (None, 1.0),
    "connect_timeout": (5.0,),
    "application_name": ("taskengine",),
}


@given(st.data())
def test_postgres_store_constructor_never_connects_and_names_the_argument(
    data: st.DataObject,
) -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    argument = data.draw(st.sampled_from(list(POSTGRES_OPTIONS)))
    value = data.draw(junk())
    arguments = {name: values[0] for name, values in POSTGRES_OPTIONS.items()}
    arguments[argument] = value
    dsn = arguments.pop("dsn")
    try:
        store = taskengine.PostgresStore(dsn, **arguments)
    except taskengine.TaskValidationError as exc:
        refusal: taskengine.TaskValidationError = exc
    else:
        store.close()
        return
    _refused(argument, refusal)
    if argument == "dsn" and len(str(value)) >= 3:
        assert str(value) not in str(refusal)  # a connection string is never echoed
