from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.core import codec, errors, jsonform, models, transitions
from taskengine.core.models import BackgroundTask, TaskError, TaskStatus

from .factories import NODE, NOW, TASK_ID, error, in_status, later, new

DATE_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
DATE_KEYS = (
    "dateCreated",
    "dateModified",
    "dateCompleted",
    "dateCancelled",
    "dateNextProcess",
    "dateRetainUntil",
)
ALL_KEYS = {
    "id",
    "type",
    "status",
    "payload",
    "result",
    "error",
    *DATE_KEYS,
    "retriesRemaining",
    "retryInterval",
    "retainFor",
    "attempts",
    "nodeIdentity",
    "progress",
}


def valid_json(**changes: Any) -> dict[str, Any]:
    data = in_status(TaskStatus.SUCCESS, payload={"n": 1}).to_json()
    data.update(changes)
    return data


def without(key: str) -> dict[str, Any]:
    data = valid_json()
    del data[key]
    return data


# --- to_json ------------------------------------------------------------------


@pytest.mark.parametrize("status", list(TaskStatus))
def test_to_json_has_exactly_the_twin_keys(status: TaskStatus) -> None:
    assert set(in_status(status).to_json()) == ALL_KEYS


def test_to_json_adds_the_idempotency_key_when_set() -> None:
    data = new(idempotency_key="order-42").to_json()
    assert set(data) == ALL_KEYS | {"idempotencyKey"}
    assert data["idempotencyKey"] == "order-42"
    assert models.BackgroundTask.from_json(data).idempotency_key == "order-42"


@pytest.mark.parametrize("status", list(TaskStatus))
def test_to_json_dates_use_the_iso_millisecond_z_form(status: TaskStatus) -> None:
    task = in_status(status, retain_for=3600.0, run_at=later(30))
    data = task.to_json()
    assert data["dateCreated"] == "2024-05-17T12:30:45.123Z"
    for key in DATE_KEYS:
        value = data[key]
        assert value is None or DATE_RE.fullmatch(value), (key, value)


def test_a_success_whose_handler_returned_none_survives_the_json_form() -> None:
    processing = transitions.claim(new(), later(1), NODE)
    task = transitions.succeed(processing, codec.encode(None), later(2))
    again = BackgroundTask.from_json(task.to_json())
    assert again == task
    assert again.result_blob is not None
    assert again.result is None
    # Other statuses hold no result: a null stays no blob at all.
    assert BackgroundTask.from_json(processing.to_json()).result_blob is None


def test_to_json_values_for_a_succeeded_task() -> None:
    task = in_status(TaskStatus.SUCCESS, payload={"n": [1, 2]}, retain_for=60.0)
    data = task.to_json()
    assert data["id"] == TASK_ID
    assert data["type"] == "demo"
    assert data["status"] == "success"
    assert type(data["status"]) is str
    assert data["payload"] == {"n": [1, 2]}
    assert data["result"] == "done"
    assert data["error"] is None
    assert data["dateCompleted"] == "2024-05-17T12:30:47.123Z"
    assert data["dateRetainUntil"] == "2024-05-17T12:31:47.123Z"
    assert data["dateNextProcess"] is None
    assert data["dateCancelled"] is None
    assert data["retriesRemaining"] == 3
    assert data["attempts"] == 1
    assert data["nodeIdentity"] == NODE
    assert data["progress"] is None
    json.dumps(data)  # plain JSON


@pytest.mark.parametrize(
    ("retry_interval", "millis"),
    [(5.0, 5000), (0.0, 0), (2.5, 2500), (0.001, 1), (86_400.0, 86_400_000), (1.2345, 1234)],
)
def test_retry_interval_is_integer_milliseconds(retry_interval: float, millis: int) -> None:
    value = new(retry_interval=retry_interval).to_json()["retryInterval"]
    assert value == millis
    assert type(value) is int


@pytest.mark.parametrize(
    ("retain_for", "millis"),
    [(None, -1), (0.0, 0), (60.0, 60_000), (0.25, 250), (3_153_600_000.0, 3_153_600_000_000)],
)
def test_retain_for_is_integer_milliseconds_and_minus_one_for_forever(
    retain_for: float | None, millis: int
) -> None:
    data = new(retain_for=retain_for).to_json()
    assert data["retainFor"] == millis
    assert type(data["retainFor"]) is int
    assert models.BackgroundTask.from_json(data).retain_for == retain_for


def test_from_json_reads_minus_one_as_forever_and_ms_as_seconds() -> None:
    task = models.BackgroundTask.from_json(valid_json(retainFor=-1, retryInterval=1500))
    assert task.retain_for is None
    assert task.retry_interval == 1.5


def test_error_with_cause_round_trips() -> None:
    root = TaskError(type="OSError", message="disk", traceback="Traceback ...\nOSError: disk\n")
    middle = TaskError(type="KeyError", message="'k'", traceback=None, cause=root)
    top = TaskError(type="WorkerInitError", message="init failed", traceback="tb", cause=middle)
    data = jsonform.error_to_json(top)
    assert data["cause"]["cause"]["type"] == "OSError"
    assert models.TaskError.from_json(json.loads(json.dumps(data))) == top

    task = attrs.evolve(in_status(TaskStatus.FAILED), error=top)
    back = BackgroundTask.from_json(json.loads(json.dumps(task.to_json())))
    assert back.error == top


def test_task_round_trip_keeps_every_field() -> None:
    task = in_status(
        TaskStatus.FAILED,
        payload={"a": [1, 2.5, None, "x"]},
        retry_count=0,
        retry_interval=1.5,
        retain_for=None,
        idempotency_key="k-1",
    )
    back = BackgroundTask.from_json(json.loads(json.dumps(task.to_json())))
    assert back.payload == task.payload
    assert back.result == task.result
    for field in attrs.fields(BackgroundTask):
        if field.name not in {"payload_blob", "result_blob"}:
            assert getattr(back, field.name) == getattr(task, field.name), field.name


# --- format_date / parse_date -------------------------------------------------


def test_format_date() -> None:
    assert jsonform.format_date(None) is None
    assert (
        jsonform.format_date(datetime(2024, 5, 17, 12, 30, 45, 123_999, tzinfo=UTC))
        == "2024-05-17T12:30:45.123Z"
    )
    plus_two = timezone(timedelta(hours=2))
    assert (
        jsonform.format_date(datetime(2024, 1, 1, 1, 0, tzinfo=plus_two))
        == "2023-12-31T23:00:00.000Z"
    )


def test_format_date_pads_years_below_1000() -> None:
    moment = datetime(999, 1, 2, tzinfo=UTC)
    text = jsonform.format_date(moment)
    assert text == "0999-01-02T00:00:00.000Z"
    assert jsonform.parse_date("dateCreated", text) == moment


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1000, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.just(UTC),
    )
)
def test_format_parse_round_trip(moment: datetime) -> None:
    text = jsonform.format_date(moment)
    assert text is not None
    assert DATE_RE.fullmatch(text)
    parsed = jsonform.parse_date("d", text)
    assert parsed is not None
    assert parsed.tzinfo is UTC
    assert parsed == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_parse_date_accepts_none() -> None:
    assert jsonform.parse_date("dateCompleted", None) is None


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01T00:00:00.000",  # naive
        "2024-01-01T00:00:00.000+00:00",
        "2024-01-01T02:00:00.000+02:00",
        "2024-01-01 00:00:00.000Z",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.000000Z",
        "2024-02-30T00:00:00.000Z",
        "2024-13-01T00:00:00.000Z",
        "2024-01-01T24:00:00.000Z",
        "2024-01-01T00:00:00.000z",
        "2024-01-01T00:00:00.000Z\n",
        "",
        1_704_067_200_000,
        datetime(2024, 1, 1, tzinfo=UTC),
    ],
    ids=repr,
)
def test_parse_date_rejects_malformed_dates(text: object) -> None:
    with pytest.raises(errors.TaskValidationError) as info:
        jsonform.parse_date("dateCreated", text)
    assert info.value.argument == "dateCreated"
    with pytest.raises(errors.TaskValidationError, match="dateCreated") as info:
        models.BackgroundTask.from_json(valid_json(dateCreated=text))


@pytest.mark.parametrize("key", [k for k in DATE_KEYS if k not in {"dateCreated"}])
def test_from_json_rejects_a_naive_date_in_every_date_field(key: str) -> None:
    with pytest.raises(errors.TaskValidationError) as info:
        models.BackgroundTask.from_json(valid_json(**{key: "2024-01-01T00:00:00.000"}))
    assert info.value.argument == key


# --- from_json rejections -----------------------------------------------------

REQUIRED_KEYS = ["id", "type", "status", "dateCreated", "dateModified", "retryInterval"]
REQUIRED_KEYS += ["retainFor", "attempts"]
NULLABLE_KEYS = sorted(ALL_KEYS - set(REQUIRED_KEYS))


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_from_json_rejects_a_missing_required_field(key: str) -> None:
    with pytest.raises(errors.TaskValidationError) as info:
        models.BackgroundTask.from_json(without(key))
    assert info.value.argument == key


@pytest.mark.parametrize("key", NULLABLE_KEYS)
def test_from_json_rejects_a_missing_nullable_field(key: str) -> None:
    with pytest.raises(errors.TaskValidationError):
        models.BackgroundTask.from_json(without(key))


@pytest.mark.parametrize("key", NULLABLE_KEYS)
def test_from_json_accepts_null_for_nullable_fields(key: str) -> None:
    task = models.BackgroundTask.from_json(valid_json(**{key: None}))
    assert task.id == TASK_ID


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"retainFor": -2}, "retainFor"),
        ({"retainFor": True}, "retainFor"),
        ({"retainFor": 1000.0}, "retainFor"),
        ({"retainFor": "1000"}, "retainFor"),
        ({"retryInterval": -1}, "retryInterval"),
        ({"retryInterval": False}, "retryInterval"),
        ({"retryInterval": 1.5}, "retryInterval"),
        ({"attempts": -1}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"attempts": 1.0}, "attempts"),
        ({"attempts": None}, "attempts"),
        ({"retriesRemaining": -1}, "retriesRemaining"),
        ({"retriesRemaining": True}, "retriesRemaining"),
        ({"retriesRemaining": "3"}, "retriesRemaining"),
        ({"status": "done"}, "status"),
        ({"status": "PENDING"}, "status"),
        ({"status": None}, "status"),
        ({"status": 1}, "status"),
        ({"id": ""}, "id"),
        ({"id": 42}, "id"),
        ({"id": None}, "id"),
        ({"type": ""}, "type"),
        ({"type": ["demo"]}, "type"),
        ({"nodeIdentity": 7}, "nodeIdentity"),
        ({"idempotencyKey": 7}, "idempotencyKey"),
        ({"progress": 1.5}, "progress"),
        ({"progress": -0.1}, "progress"),
        ({"progress": float("nan")}, "progress"),
        ({"progress": True}, "progress"),
        ({"progress": "0.5"}, "progress"),
        ({"error": "boom"}, "error"),
        ({"error": {"type": 1, "message": "m"}}, "error"),
        ({"error": {"type": "E"}}, "error"),
        ({"error": {"type": "E", "message": "m", "traceback": 5}}, "error.traceback"),
        ({"error": {"type": "E", "message": "m", "cause": []}}, "error.cause"),
    ],
    ids=repr,
)
def test_from_json_rejects_bad_values(changes: dict[str, Any], argument: str) -> None:
    with pytest.raises(errors.TaskValidationError) as info:
        models.BackgroundTask.from_json(valid_json(**changes))
    assert info.value.argument == argument
    assert argument in str(info.value)


@pytest.mark.parametrize("data", [None, [], "task", 42, ("id", "x")], ids=repr)
def test_from_json_rejects_a_non_object(data: object) -> None:
    with pytest.raises(errors.TaskValidationError) as info:
        models.BackgroundTask.from_json(data)  # type: ignore[arg-type]
    assert info.value.argument == "data"


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"retainFor": 10**400}, "retainFor"),
        ({"retryInterval": 10**400}, "retryInterval"),
    ],
    ids=["retainFor", "retryInterval"],
)
def test_from_json_rejects_huge_durations(changes: dict[str, Any], argument: str) -> None:
    with pytest.raises(errors.TaskValidationError) as info:
        models.BackgroundTask.from_json(valid_json(**changes))
    assert info.value.argument == argument


def test_from_json_bounds_the_retry_interval() -> None:
    data = valid_json(status="processing", retryInterval=10**100)
    try:
        task = models.BackgroundTask.from_json(data)
    except errors.TaskValidationError:
        return
    transitions.fail_attempt(task, error(), NOW)


def test_from_json_result_and_payload_accept_any_json() -> None:
    data = valid_json(payload=[1, "two", {"three": None}], result={"ok": True})
    task = models.BackgroundTask.from_json(data)
    assert task.payload == [1, "two", {"three": None}]
    assert task.result == {"ok": True}
    assert codec.decode(task.payload_blob) == task.payload


# --- round trip property ------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
texts = st.text(min_size=1, max_size=30)
task_errors = st.recursive(
    st.builds(TaskError, type=texts, message=st.text(max_size=40), traceback=st.none() | st.text()),
    lambda causes: st.builds(
        TaskError,
        type=texts,
        message=st.text(max_size=40),
        traceback=st.none() | st.text(max_size=40),
        cause=causes,
    ),
    max_leaves=4,
)
STEPS = ("claim", "succeed", "fail", "cancel", "terminate", "retry", "progress")


@st.composite
def tasks(draw: st.DrawFn) -> BackgroundTask:
    start = draw(
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        )
    )
    now = start.replace(microsecond=start.microsecond // 1000 * 1000)
    task = transitions.new_task(
        task_id=draw(st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
        task_type=draw(texts),
        payload_blob=codec.encode(draw(json_values)),
        now=now,
        retry_count=draw(st.none() | st.integers(0, 5)),
        retry_interval=draw(st.integers(0, 10**9)) / 1000,
        retain_for=draw(st.none() | st.integers(0, 10**9).map(lambda ms: ms / 1000)),
        run_at=draw(
            st.none() | st.integers(0, 10**9).map(lambda ms: now + timedelta(milliseconds=ms))
        ),
        idempotency_key=draw(st.none() | texts),
    )
    for step in draw(st.lists(st.sampled_from(STEPS), max_size=8)):
        now += timedelta(milliseconds=draw(st.integers(0, 10**8)))
        try:
            if step == "claim":
                task = transitions.claim(task, now, draw(texts))
            elif step == "succeed":
                task = transitions.succeed(task, codec.encode(draw(json_values)), now)
            elif step == "fail":
                task = transitions.fail_attempt(task, draw(task_errors), now)
            elif step == "cancel":
                task = transitions.cancel(task, now)
            elif step == "terminate":
                task = transitions.cancel(task, now, terminate=True)
            elif step == "retry":
                task = transitions.retry(task, now)
            else:
                fraction = draw(st.floats(0.0, 1.0))
                task = transitions.report_progress(task, fraction, now)
        except transitions.Blocked:
            pass
    return task


@settings(max_examples=200, deadline=None)
@given(tasks())
def test_to_json_from_json_to_json_is_identical(task: BackgroundTask) -> None:
    first = task.to_json()
    wire = json.loads(json.dumps(first))
    back = BackgroundTask.from_json(wire)
    assert back.to_json() == first
    assert set(first) <= ALL_KEYS | {"idempotencyKey"}
    for key in DATE_KEYS:
        assert first[key] is None or DATE_RE.fullmatch(first[key])
    for field in attrs.fields(BackgroundTask):
        if field.name not in {"payload_blob", "result_blob"}:
            assert getattr(back, field.name) == getattr(task, field.name), field.name
