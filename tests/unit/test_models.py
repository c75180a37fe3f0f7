from __future__ import annotations

import attrs
import pytest

from taskengine.core import codec, errors
from taskengine.core.models import (
    MAX_CAUSE_DEPTH,
    MAX_ERROR_MESSAGE,
    MAX_TRACEBACK,
    BackgroundTask,
    QueryResult,
    SortDirection,
    TaskError,
    TaskStatus,
)

from .factories import NOW, TASK_ID, in_status, new


def _raise_value_error() -> None:
    raise ValueError("boom from the helper")


def _error_of(function: object) -> TaskError:
    try:
        function()  # type: ignore[operator]
    except BaseException as exc:
        return TaskError.from_exception(exc)
    raise AssertionError("the function did not raise")


def _chain(error: TaskError) -> list[TaskError]:
    chain: list[TaskError] = []
    node: TaskError | None = error
    while node is not None:
        chain.append(node)
        node = node.cause
    return chain


# --- TaskStatus and SortDirection ---------------------------------------------


def test_task_status_values() -> None:
    assert {s.name: s.value for s in TaskStatus} == {
        "PENDING": "pending",
        "PROCESSING": "processing",
        "SUCCESS": "success",
        "FAILED": "failed",
        "CANCELLED": "cancelled",
    }


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (TaskStatus.PENDING, False),
        (TaskStatus.PROCESSING, False),
        (TaskStatus.SUCCESS, True),
        (TaskStatus.FAILED, True),
        (TaskStatus.CANCELLED, True),
    ],
)
def test_task_status_is_final(status: TaskStatus, final: bool) -> None:
    assert status.is_final is final


def test_task_status_is_a_str() -> None:
    assert isinstance(TaskStatus.PENDING, str)
    assert TaskStatus.PENDING == "pending"
    assert str(TaskStatus.PROCESSING) == "processing"
    assert f"{TaskStatus.FAILED}" == "failed"
    assert TaskStatus("success") is TaskStatus.SUCCESS


def test_sort_direction_values() -> None:
    assert {d.name: d.value for d in SortDirection} == {"ASCENDING": "asc", "DESCENDING": "desc"}
    assert str(SortDirection.DESCENDING) == "desc"
    assert SortDirection("asc") is SortDirection.ASCENDING


# --- TaskError.from_exception -------------------------------------------------


def test_from_exception_records_type_and_message() -> None:
    error = _error_of(_raise_value_error)
    assert error.type == "ValueError"
    assert error.message == "boom from the helper"
    assert error.cause is None


def test_from_exception_traceback_contains_the_raising_line() -> None:
    error = _error_of(_raise_value_error)
    assert error.traceback is not None
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("boom from the helper")' in error.traceback
    assert "_raise_value_error" in error.traceback
    assert error.traceback.rstrip().endswith("ValueError: boom from the helper")


def test_from_exception_without_traceback() -> None:
    error = TaskError.from_exception(KeyError("never raised"))
    assert error.type == "KeyError"
    assert error.message == "'never raised'"
    assert error.traceback == "KeyError: 'never raised'\n"


def test_from_exception_follows_raise_from() -> None:
    def outer() -> None:
        try:
            _raise_value_error()
        except ValueError as exc:
            raise RuntimeError("outer failure") from exc

    error = _error_of(outer)
    assert error.type == "RuntimeError"
    assert error.message == "outer failure"
    assert error.cause is not None
    assert error.cause.type == "ValueError"
    assert error.cause.message == "boom from the helper"
    assert error.cause.traceback is not None
    assert 'raise ValueError("boom from the helper")' in error.cause.traceback
    assert error.cause.cause is None
    # chain=False: the outer traceback does not repeat the cause's text
    assert error.traceback is not None
    assert "boom from the helper" not in error.traceback


def test_from_exception_follows_implicit_context() -> None:
    def handler() -> None:
        try:
            _raise_value_error()
        except ValueError:
            raise LookupError("while handling")  # noqa: B904 - implicit context on purpose

    error = _error_of(handler)
    assert error.type == "LookupError"
    assert error.cause is not None
    assert error.cause.type == "ValueError"


def test_from_exception_honours_from_none() -> None:
    def handler() -> None:
        try:
            _raise_value_error()
        except ValueError:
            raise LookupError("clean") from None

    assert _error_of(handler).cause is None


def test_from_exception_bounds_the_cause_depth() -> None:
    exc: BaseException = ValueError("level 0")
    for level in range(1, 20):
        new_exc = ValueError(f"level {level}")
        new_exc.__cause__ = exc
        exc = new_exc
    chain = _chain(TaskError.from_exception(exc))
    assert len(chain) == MAX_CAUSE_DEPTH + 1
    assert [e.message for e in chain] == [f"level {19 - i}" for i in range(MAX_CAUSE_DEPTH + 1)]


def test_from_exception_survives_a_cause_cycle() -> None:
    first, second = ValueError("first"), TypeError("second")
    first.__cause__ = second
    second.__cause__ = first
    chain = _chain(TaskError.from_exception(first))
    assert len(chain) == MAX_CAUSE_DEPTH + 1
    assert [e.type for e in chain[:3]] == ["ValueError", "TypeError", "ValueError"]


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_from_exception_with_a_broken_str() -> None:
    def raiser() -> None:
        raise BadStr("x")

    error = _error_of(raiser)
    assert error.type == "BadStr"
    assert error.message == "<unprintable BadStr>"
    assert error.traceback is not None
    assert "raise BadStr" in error.traceback


def test_from_exception_truncates_a_huge_message() -> None:
    def raiser() -> None:
        raise ValueError("x" * 1_000_000)

    error = _error_of(raiser)
    assert len(error.message) == MAX_ERROR_MESSAGE
    assert error.message.endswith("... [truncated]")
    assert error.message.startswith("xxxx")
    assert error.traceback is not None
    assert len(error.traceback) <= MAX_TRACEBACK
    assert error.traceback.endswith("... [truncated]")


def test_from_exception_keeps_a_message_at_the_limit() -> None:
    error = TaskError.from_exception(ValueError("y" * MAX_ERROR_MESSAGE))
    assert error.message == "y" * MAX_ERROR_MESSAGE


@pytest.mark.parametrize(
    ("exc", "type_name", "message"),
    [
        (SystemExit(3), "SystemExit", "3"),
        (KeyboardInterrupt(), "KeyboardInterrupt", ""),
        (errors.TaskTimeoutError("too slow"), "TaskTimeoutError", "too slow"),
    ],
)
def test_from_exception_accepts_base_exceptions(
    exc: BaseException, type_name: str, message: str
) -> None:
    error = TaskError.from_exception(exc)
    assert (error.type, error.message) == (type_name, message)


def test_task_error_of_builds_an_engine_error_without_traceback() -> None:
    error = TaskError.of(errors.WorkerCrashedError, "worker killed by signal 9")
    assert error == TaskError(type="WorkerCrashedError", message="worker killed by signal 9")
    assert error.traceback is None
    assert error.cause is None


def test_task_error_is_frozen() -> None:
    error = TaskError(type="ValueError", message="m")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        error.message = "changed"  # type: ignore[misc]


def test_task_error_to_json_delegates_to_jsonform() -> None:
    cause = TaskError(type="KeyError", message="'k'")
    error = TaskError(type="ValueError", message="m", traceback="tb", cause=cause)
    assert error.to_json() == {
        "type": "ValueError",
        "message": "m",
        "traceback": "tb",
        "cause": {"type": "KeyError", "message": "'k'", "traceback": None, "cause": None},
    }


# --- BackgroundTask -----------------------------------------------------------


def test_payload_is_a_fresh_copy_on_every_access() -> None:
    task = new(payload={"items": [1, 2]})
    first = task.payload
    first["items"].append(3)
    first["new"] = True
    assert task.payload == {"items": [1, 2]}
    assert task.payload is not task.payload


def test_result_is_none_without_a_blob() -> None:
    task = new(payload=1)
    assert task.result_blob is None
    assert task.result is None


def test_result_is_decoded_and_fresh() -> None:
    task = attrs.evolve(in_status(TaskStatus.SUCCESS), result_blob=codec.encode([1, {"a": 2}]))
    result = task.result
    assert result == [1, {"a": 2}]
    result.append("mutated")
    assert task.result == [1, {"a": 2}]


@pytest.mark.parametrize(
    "blob",
    [b"garbage bytes", codec.encode(1)[:3] + bytes((3, 99)) + codec.encode(1)[5:]],
    ids=["garbage", "other-python"],
)
def test_undecodable_payload_is_a_store_error_naming_the_task(blob: bytes) -> None:
    task = attrs.evolve(in_status(TaskStatus.FAILED), payload_blob=blob)
    with pytest.raises(errors.StoreError, match=TASK_ID) as info:
        _ = task.payload
    assert "payload" in str(info.value)
    assert isinstance(info.value.__cause__, codec.BlobFormatError)
    # every other field stays readable
    assert task.id == TASK_ID
    assert task.status is TaskStatus.FAILED
    assert task.error is not None
    assert task.date_created == NOW
    assert task.attempts == 1
    assert task.result is None


def test_other_python_payload_names_the_version() -> None:
    blob = codec.encode(1)[:3] + bytes((3, 99)) + codec.encode(1)[5:]
    task = attrs.evolve(new(), payload_blob=blob)
    with pytest.raises(errors.StoreError, match=r"written by Python 3\.99"):
        _ = task.payload


def test_undecodable_result_is_a_store_error_naming_the_task() -> None:
    task = attrs.evolve(in_status(TaskStatus.SUCCESS), result_blob=codec.encode(1)[:5] + b"\xff")
    with pytest.raises(errors.StoreError, match=f"the result of task {TASK_ID}"):
        _ = task.result
    assert task.payload is None


def test_corrupt_body_is_a_store_error_carrying_the_unpickler_error() -> None:
    task = attrs.evolve(new(), payload_blob=codec.encode(1)[:5] + b"\xff\xff")
    with pytest.raises(errors.StoreError, match="UnpicklingError") as info:
        _ = task.payload
    assert info.value.__cause__ is not None


def test_background_task_is_frozen() -> None:
    task = new()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.status = TaskStatus.SUCCESS  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.payload_blob = b""  # type: ignore[misc]


def test_background_task_defaults() -> None:
    task = BackgroundTask(
        id=TASK_ID,
        type="demo",
        status=TaskStatus.PENDING,
        payload_blob=codec.encode(None),
        date_created=NOW,
        date_modified=NOW,
    )
    assert task.result_blob is None
    assert task.error is None
    assert task.retries_remaining is None
    assert task.retry_interval == 5.0
    assert task.retain_for == 0.0
    assert task.attempts == 0
    assert task.node_identity is None
    assert task.progress is None
    assert task.idempotency_key is None


def test_repr_never_shows_the_blobs() -> None:
    text = repr(new(payload="s3cret-payload-value"))
    assert "payload_blob" not in text
    assert "result_blob" not in text
    assert TASK_ID in text


def test_query_result_defaults_to_no_cursor() -> None:
    page = QueryResult(entities=[new()])
    assert page.cursor is None
    assert page.entities[0].id == TASK_ID
