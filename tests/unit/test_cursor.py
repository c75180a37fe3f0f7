from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.core import clock
from taskengine.core.cursor import (
    NO_DATE,
    SORT_FIELDS,
    CursorPosition,
    QuerySpec,
    decode_cursor,
    encode_cursor,
    resolve_sort_property,
    sort_key,
)
from taskengine.core.errors import TaskValidationError
from taskengine.core.models import SortDirection, TaskStatus

from .factories import NOW, TASK_ID, in_status

ASC, DESC = SortDirection.ASCENDING, SortDirection.DESCENDING
SPEC = QuerySpec(task_type="demo", status=None, sort_field="date_created", direction=ASC)
STATUS_SPEC = QuerySpec(task_type=None, status=None, sort_field="status", direction=DESC)
POSITION = CursorPosition(value=1_715_949_045_123, task_id=TASK_ID)


def raw_cursor(body: Any) -> str:
    """A cursor made by hand from any JSON body, encoded like the real ones."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def body(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"v": 1, "q": SPEC.fingerprint(), "k": POSITION.value, "i": TASK_ID}
    data.update(changes)
    return data


def rejected(spec: QuerySpec, cursor: object) -> TaskValidationError:
    with pytest.raises(TaskValidationError) as info:
        decode_cursor(spec, cursor)
    assert info.value.argument == "cursor"
    assert len(str(info.value)) <= 200
    return info.value


# --- resolve_sort_property ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("date_created", "date_created"),
        ("dateCreated", "date_created"),
        ("date_modified", "date_modified"),
        ("dateModified", "date_modified"),
        ("date_completed", "date_completed"),
        ("dateCompleted", "date_completed"),
        ("status", "status"),
    ],
)
def test_resolve_sort_property_accepts_snake_and_camel(name: str, field: str) -> None:
    assert resolve_sort_property(name) == field


def test_sort_fields_whitelist_is_exact() -> None:
    assert set(SORT_FIELDS.values()) == {
        "date_created",
        "date_modified",
        "date_completed",
        "status",
    }


@pytest.mark.parametrize(
    "name",
    [
        "payload",
        "id",
        "type",
        "date_next_process",
        "DATE_CREATED",
        "date_created ",
        "id; DROP TABLE tasks",
        "date_created; DROP TABLE tasks",
        "status desc, (select 1)",
        "",
        None,
        1,
        b"status",
        ["status"],
    ],
    ids=repr,
)
def test_resolve_sort_property_rejects(name: object) -> None:
    with pytest.raises(TaskValidationError) as info:
        resolve_sort_property(name)
    assert info.value.argument == "sort_property"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_resolve_sort_property_only_maps_whitelisted_names(name: str) -> None:
    if name in SORT_FIELDS:
        assert resolve_sort_property(name) == SORT_FIELDS[name]
    else:
        with pytest.raises(TaskValidationError):
            resolve_sort_property(name)


# --- encode / decode ----------------------------------------------------------


def test_round_trip_for_a_date_sort() -> None:
    cursor = encode_cursor(SPEC, POSITION)
    assert isinstance(cursor, str)
    assert "=" not in cursor
    assert decode_cursor(SPEC, cursor) == POSITION


def test_round_trip_for_a_status_sort() -> None:
    position = CursorPosition(value="processing", task_id=TASK_ID)
    assert decode_cursor(STATUS_SPEC, encode_cursor(STATUS_SPEC, position)) == position


def test_round_trip_for_a_task_without_completion_date() -> None:
    spec = attrs.evolve(SPEC, sort_field="date_completed")
    position = CursorPosition(value=NO_DATE, task_id=TASK_ID)
    assert decode_cursor(spec, encode_cursor(spec, position)) == position


task_ids = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
specs = st.builds(
    QuerySpec,
    task_type=st.none() | st.text(max_size=40),
    status=st.none() | st.sampled_from(TaskStatus),
    sort_field=st.sampled_from(["date_created", "date_modified", "date_completed"]),
    direction=st.sampled_from(SortDirection),
)


@settings(max_examples=200, deadline=None)
@given(specs, st.integers(min_value=NO_DATE, max_value=2**53 - 1), task_ids)
def test_round_trip_property(spec: QuerySpec, value: int, task_id: str) -> None:
    position = CursorPosition(value=value, task_id=task_id)
    cursor = encode_cursor(spec, position)
    assert len(cursor) <= 512
    assert decode_cursor(spec, cursor) == position


@pytest.mark.parametrize(
    "other",
    [
        attrs.evolve(SPEC, task_type="other"),
        attrs.evolve(SPEC, task_type=None),
        attrs.evolve(SPEC, status=TaskStatus.PENDING),
        attrs.evolve(SPEC, sort_field="date_modified"),
        attrs.evolve(SPEC, sort_field="date_completed"),
        attrs.evolve(SPEC, direction=DESC),
    ],
    ids=["type", "no-type", "status", "sort-modified", "sort-completed", "direction"],
)
def test_cursor_from_another_query_is_rejected(other: QuerySpec) -> None:
    cursor = encode_cursor(SPEC, POSITION)
    error = rejected(other, cursor)
    assert "different query" in error.reason


def test_fingerprint_tells_none_from_the_string_none() -> None:
    assert SPEC.fingerprint() != attrs.evolve(SPEC, task_type="None").fingerprint()
    assert attrs.evolve(SPEC, task_type=None).fingerprint() != (
        attrs.evolve(SPEC, task_type="null").fingerprint()
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "not base64 at all",
        "é",
        "a" * 513,
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        base64.urlsafe_b64encode(b"not json").decode(),
        raw_cursor([1, "q", 2, "i"]),
        raw_cursor("just a string"),
        raw_cursor(None),
    ],
    ids=repr,
)
def test_tampered_cursor_is_rejected(cursor: str) -> None:
    rejected(SPEC, cursor)


def test_truncated_and_padded_cursors_are_rejected() -> None:
    cursor = encode_cursor(SPEC, POSITION)
    rejected(SPEC, cursor[:-4])
    rejected(SPEC, cursor[5:])
    rejected(SPEC, cursor + "AAAA")


@pytest.mark.parametrize(
    "data",
    [
        {"v": 1, "q": SPEC.fingerprint(), "k": 1},  # missing key
        body(extra=1),
        body(v=2),
        body(v=0),
        body(v="1"),
        body(v=None),
        body(q="0" * 16),
        body(q=None),
        body(i="0" * 31),
        body(i="0" * 33),
        body(i="G" * 32),
        body(i=TASK_ID.upper()),
        body(i=12345),
        body(i=None),
        body(k=2**53),
        body(k=10**100),
        body(k=-2),
        body(k=1.5),
        body(k=1e300),
        body(k="1715949045123"),
        body(k=True),
        body(k=None),
        body(k=[1]),
    ],
    ids=repr,
)
def test_wrong_schema_is_rejected(data: dict[str, Any]) -> None:
    rejected(SPEC, raw_cursor(data))


def test_wrong_version_says_so() -> None:
    assert "version" in rejected(SPEC, raw_cursor(body(v=2))).reason


@pytest.mark.parametrize("value", ["done", "PENDING", 1, None, True, ["pending"]], ids=repr)
def test_status_cursor_needs_a_known_status(value: object) -> None:
    data = {"v": 1, "q": STATUS_SPEC.fingerprint(), "k": value, "i": TASK_ID}
    rejected(STATUS_SPEC, raw_cursor(data))


@pytest.mark.parametrize("cursor", [None, 1, b"abc", ["x"], {"v": 1}], ids=repr)
def test_non_str_cursor_is_rejected(cursor: object) -> None:
    assert "expected a str" in rejected(SPEC, cursor).reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_decode_of_any_text_is_a_cursor_or_a_validation_error(text: str) -> None:
    try:
        position: CursorPosition | str = decode_cursor(SPEC, text)
    except TaskValidationError as exc:
        position = exc.argument
    if isinstance(position, str):
        assert position == "cursor"
    else:
        assert isinstance(position.value, int)
        assert len(position.task_id) == 32


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=380))
def test_decode_of_any_base64_is_a_cursor_or_a_validation_error(raw: bytes) -> None:
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    argument = "cursor"
    try:
        decode_cursor(SPEC, text)
    except TaskValidationError as exc:
        argument = exc.argument
    assert argument == "cursor"


# --- sort_key -----------------------------------------------------------------


def test_sort_key_for_dates_is_millis_and_id() -> None:
    task = in_status(TaskStatus.SUCCESS)
    assert sort_key(task, "date_created") == (clock.to_millis(NOW), TASK_ID)
    assert sort_key(task, "date_modified") == (clock.to_millis(task.date_modified), TASK_ID)
    assert sort_key(task, "date_completed") == (clock.to_millis(task.date_completed), TASK_ID)  # type: ignore[arg-type]


def test_sort_key_uses_no_date_for_a_missing_completion_date() -> None:
    pending = in_status(TaskStatus.PENDING)
    done = in_status(TaskStatus.SUCCESS)
    assert pending.date_completed is None
    assert sort_key(pending, "date_completed") == (NO_DATE, TASK_ID)
    assert NO_DATE == -1
    assert sort_key(pending, "date_completed") < sort_key(done, "date_completed")


@pytest.mark.parametrize("status", list(TaskStatus))
def test_sort_key_for_status_is_its_value(status: TaskStatus) -> None:
    key = sort_key(in_status(status), "status")
    assert key == (status.value, TASK_ID)
    assert type(key[0]) is str


def test_sort_key_breaks_ties_by_id() -> None:
    first = in_status(TaskStatus.PENDING, task_id="0" * 32)
    second = in_status(TaskStatus.PENDING, task_id="0" * 31 + "1")
    assert sort_key(first, "date_created") < sort_key(second, "date_created")


def test_sort_key_of_a_task_round_trips_through_a_cursor() -> None:
    task = in_status(TaskStatus.SUCCESS)
    for field in ("date_created", "date_modified", "date_completed", "status"):
        spec = attrs.evolve(SPEC, sort_field=field)
        value, task_id = sort_key(task, field)
        position = CursorPosition(value=value, task_id=task_id)
        assert decode_cursor(spec, encode_cursor(spec, position)) == position
