from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.core import clock
from taskengine.core import validation as v
from taskengine.core.errors import TaskValidationError
from taskengine.core.models import SortDirection, TaskStatus

ONE_MB = "x" * 1_000_000
#: Longest message accepted for an error quoting a huge value.
MESSAGE_LIMIT = 200


def rejects(function: Callable[[], object], argument: str) -> TaskValidationError:
    """Assert that ``function`` raises a TaskValidationError naming ``argument``."""
    with pytest.raises(TaskValidationError) as info:
        function()
    error = info.value
    assert error.argument == argument
    assert str(error).startswith(f"invalid {argument}=")
    assert len(str(error)) <= MESSAGE_LIMIT
    assert isinstance(error, ValueError)
    return error


# --- check_identifier_text ----------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a", "demo", "image.resize", "x'; DROP TABLE tasks; --", "ü" * 255, "日本語"]
)
def test_identifier_text_accepts(value: str) -> None:
    assert v.check_identifier_text("task_type", value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must not be empty"),
        ("a\x00b", "NUL"),
        ("\x00", "NUL"),
        ("lone \ud800", "UTF-8"),
        ("\udfff", "UTF-8"),
        ("x" * 256, "longer than 255"),
        (ONE_MB, "longer than 255"),
        (None, "got NoneType"),
        (b"demo", "got bytes"),
        (42, "got int"),
        (True, "got bool"),
        (["demo"], "got list"),
    ],
    ids=lambda value: repr(value)[:20],
)
def test_identifier_text_rejects(value: object, reason: str) -> None:
    error = rejects(lambda: v.check_identifier_text("task_type", value), "task_type")
    assert reason in error.reason
    assert error.value is value


def test_one_mb_string_is_truncated_in_the_message() -> None:
    error = rejects(lambda: v.check_identifier_text("idempotency_key", ONE_MB), "idempotency_key")
    assert "..." in str(error)
    assert error.value is ONE_MB  # the full value stays available as data


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_identifier_text_accepts_exactly_the_documented_strings(value: str) -> None:
    valid = 0 < len(value) <= 255 and "\x00" not in value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        valid = False
    if valid:
        assert v.check_identifier_text("task_type", value) == value
    else:
        rejects(lambda: v.check_identifier_text("task_type", value), "task_type")


# --- check_task_id ------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "0" * 32, "not-an-id", "x'; DROP TABLE tasks; --"])
def test_task_id_accepts_any_str(value: str) -> None:
    assert v.check_task_id(value) == value


@pytest.mark.parametrize("value", [None, 1, b"0" * 32, 1.5, True, object()])
def test_task_id_rejects_non_str(value: object) -> None:
    rejects(lambda: v.check_task_id(value), "task_id")


# --- check_count / check_optional_positive_int --------------------------------


@pytest.mark.parametrize("value", [0, 1, 3, 2**53])
def test_count_accepts(value: int) -> None:
    assert v.check_count("retry_count", value, nullable=False) == value


def test_count_nullable() -> None:
    assert v.check_count("retry_count", None, nullable=True) is None
    rejects(lambda: v.check_count("retry_count", None, nullable=False), "retry_count")


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        -1,
        -(10**100),
        2**53 + 1,
        10**100,
        1.0,
        0.0,
        math.nan,
        math.inf,
        "3",
        Decimal(1),
    ],
    ids=repr,
)
def test_count_rejects(value: object) -> None:
    rejects(lambda: v.check_count("retry_count", value, nullable=True), "retry_count")


@pytest.mark.parametrize("value", [None, 1, 2**53])
def test_optional_positive_int_accepts(value: int | None) -> None:
    assert v.check_optional_positive_int("max_worker_count", value) == value


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 2**53 + 1, "1"], ids=repr)
def test_optional_positive_int_rejects(value: object) -> None:
    rejects(lambda: v.check_optional_positive_int("max_worker_count", value), "max_worker_count")


# --- check_duration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (5, 5.0),
        (0.25, 0.25),
        (1e-9, 1e-9),
        (timedelta(minutes=2), 120.0),
        (timedelta(0), 0.0),
        (timedelta(milliseconds=1), 0.001),
        (v.MAX_DURATION, v.MAX_DURATION),
        (int(v.MAX_DURATION), v.MAX_DURATION),
    ],
    ids=repr,
)
def test_duration_accepts(value: object, seconds: float) -> None:
    result = v.check_duration("retry_interval", value)
    assert result == seconds
    assert type(result) is float


def test_negative_zero_is_accepted_as_zero() -> None:
    assert v.check_duration("retry_interval", -0.0) == 0
    rejects(lambda: v.check_duration("execution_timeout", -0.0, positive=True), "execution_timeout")


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.001,
        -(10**100),
        math.nan,
        math.inf,
        -math.inf,
        10**100,
        10**400,
        v.MAX_DURATION + 1,
        timedelta(seconds=-1),
        timedelta.max,
        True,
        False,
        "5",
        None,
        Decimal("5"),
        complex(1, 0),
        [5],
    ],
    ids=repr,
)
def test_duration_rejects(value: object) -> None:
    error = rejects(lambda: v.check_duration("retry_interval", value), "retry_interval")
    assert len(str(error)) <= MESSAGE_LIMIT


def test_duration_nullable_and_positive() -> None:
    assert v.check_duration("idle_shutdown_timeout", None, nullable=True) is None
    rejects(lambda: v.check_duration("retry_interval", None), "retry_interval")
    assert v.check_duration("execution_timeout", 0.5, positive=True) == 0.5
    error = rejects(
        lambda: v.check_duration("execution_timeout", 0, positive=True), "execution_timeout"
    )
    assert "> 0" in error.reason
    rejects(
        lambda: v.check_duration("execution_timeout", timedelta(0), positive=True),
        "execution_timeout",
    )


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_duration_property_over_all_floats(value: float) -> None:
    if math.isfinite(value) and 0 <= value <= v.MAX_DURATION:
        assert v.check_duration("retry_interval", value) == value
    else:
        rejects(lambda: v.check_duration("retry_interval", value), "retry_interval")


# --- check_retain_for ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (-1, None), (0, 0.0), (60, 60.0), (0.5, 0.5), (timedelta(days=1), 86_400.0)],
    ids=repr,
)
def test_retain_for_accepts(value: object, expected: float | None) -> None:
    assert v.check_retain_for(value) == expected


@pytest.mark.parametrize(
    "value", [-2, -0.5, True, False, math.nan, math.inf, 10**100, "0", timedelta(seconds=-1)]
)
def test_retain_for_rejects(value: object) -> None:
    rejects(lambda: v.check_retain_for(value), "retain_for")


# --- check_aware_datetime -----------------------------------------------------


class NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


@pytest.mark.parametrize(
    "value",
    [
        None,
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_aware_datetime_accepts(value: datetime | None) -> None:
    checked = v.check_aware_datetime("run_at", value)
    assert checked == value
    assert checked is None or checked.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 1),
        datetime(2024, 1, 1, tzinfo=NoOffset()),
        "2024-01-01T00:00:00Z",
        1_704_067_200,
        datetime(2024, 1, 1, tzinfo=UTC).date(),
    ],
    ids=repr,
)
def test_aware_datetime_rejects(value: object) -> None:
    rejects(lambda: v.check_aware_datetime("run_at", value), "run_at")


class HostileOffset(tzinfo):
    """A tzinfo whose ``utcoffset`` answers with whatever it was given, or raises it."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls = 0

    def utcoffset(self, dt: datetime | None) -> Any:
        self.calls += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


class FirstAnswerOnly(tzinfo):
    """A valid offset the first time it is asked, an exception every time after."""

    def __init__(self) -> None:
        self.calls = 0

    def utcoffset(self, dt: datetime | None) -> timedelta:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("asked twice")
        return timedelta(hours=2)


EAST_14, WEST_14 = timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))


@pytest.mark.parametrize(
    "value",
    [
        datetime.min.replace(tzinfo=EAST_14),
        datetime.max.replace(tzinfo=WEST_14),
        datetime(1, 1, 1, 13, 59, 59, 999_999, tzinfo=EAST_14),
        datetime(9999, 12, 31, 10, 0, 0, 1, tzinfo=WEST_14),
        datetime(2024, 1, 1, tzinfo=HostileOffset(RuntimeError("offset lookup failed"))),
        datetime(2024, 1, 1, tzinfo=HostileOffset(OverflowError("huge"))),
        datetime(2024, 1, 1, tzinfo=HostileOffset(ValueError("plain"))),
        datetime(2024, 1, 1, tzinfo=HostileOffset(timedelta(hours=24))),
        datetime(2024, 1, 1, tzinfo=HostileOffset(timedelta(days=-3))),
        datetime(2024, 1, 1, tzinfo=HostileOffset(3600)),
        datetime(2024, 1, 1, tzinfo=HostileOffset("+02:00")),
        datetime(2024, 1, 1, tzinfo=HostileOffset(None)),
    ],
    ids=repr,
)
def test_aware_datetime_rejects_moments_without_a_utc_datetime(value: datetime) -> None:
    error = rejects(lambda: v.check_aware_datetime("run_at", value), "run_at")
    assert error.value is value


def test_aware_datetime_lets_interrupts_from_a_tzinfo_through() -> None:
    for interrupt in (KeyboardInterrupt(), SystemExit(3)):
        value = datetime(2024, 1, 1, tzinfo=HostileOffset(interrupt))
        with pytest.raises(type(interrupt)):
            v.check_aware_datetime("run_at", value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime.min.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)),
        (datetime.max.replace(tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
        (datetime.min.replace(tzinfo=WEST_14), datetime(1, 1, 1, 14, tzinfo=UTC)),
        (
            datetime.max.replace(tzinfo=EAST_14),
            datetime(9999, 12, 31, 9, 59, 59, 999_000, tzinfo=UTC),
        ),
        (
            datetime(
                2024, 6, 1, 12, 0, 0, 123_999, tzinfo=timezone(timedelta(hours=5, minutes=30))
            ),
            datetime(2024, 6, 1, 6, 30, 0, 123_000, tzinfo=UTC),
        ),
    ],
    ids=repr,
)
def test_aware_datetime_returns_utc_whole_milliseconds(value: datetime, expected: datetime) -> None:
    checked = v.check_aware_datetime("run_at", value)
    assert checked == expected
    assert checked is not None
    assert checked.tzinfo is UTC
    assert type(checked) is datetime


def test_aware_datetime_asks_the_tzinfo_once() -> None:
    zone = FirstAnswerOnly()
    checked = v.check_aware_datetime("run_at", datetime(2024, 1, 1, 12, tzinfo=zone))
    assert checked == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert zone.calls == 1
    # What the engine does next with the checked value never asks that tzinfo again.
    assert clock.truncate_to_millis(checked) == checked
    assert zone.calls == 1


def test_every_accepted_moment_fits_the_stores_millisecond_columns() -> None:
    for moment in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)):
        checked = v.check_aware_datetime("run_at", moment)
        assert checked is not None
        millis = clock.to_millis(checked)
        assert -(2**63) <= millis < 2**63  # SQLite INTEGER and PostgreSQL bigint
        assert clock.from_millis(millis) == checked


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime.min,
        max_value=datetime.max,
        timezones=st.one_of(
            st.timezones(),
            st.builds(
                timezone,
                st.timedeltas(
                    min_value=timedelta(hours=-23, minutes=-59),
                    max_value=timedelta(hours=23, minutes=59),
                ),
            ),
        ),
    )
)
def test_aware_datetime_is_the_same_instant_or_a_validation_error(value: datetime) -> None:
    offset = value.utcoffset()
    assert offset is not None
    naive = value.replace(tzinfo=None)
    # Only a moment outside the UTC range is refused.
    if naive - datetime.min < offset or datetime.max - naive < -offset:
        rejects(lambda: v.check_aware_datetime("run_at", value), "run_at")
        return
    checked = v.check_aware_datetime("run_at", value)
    assert checked is not None
    assert checked.tzinfo is UTC
    assert checked.microsecond % 1000 == 0
    assert timedelta(0) <= value - checked < timedelta(milliseconds=1)


# --- module path / handler name -----------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["myapp", "myapp.workers.image", "_private.mod", "a1.b2.c3", "__main__", "pkg.__init__"],
)
def test_module_path_accepts(value: str) -> None:
    assert v.check_module_path(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".relative",
        "trailing.",
        "a..b",
        "1module",
        "my-app",
        "my app",
        "a/b",
        "a.b\n",
        "modülé",
        "os; rm -rf /",
        "a" * 256,
        ONE_MB,
        None,
        7,
    ],
    ids=lambda value: repr(value)[:20],
)
def test_module_path_rejects(value: object) -> None:
    rejects(lambda: v.check_module_path(value), "module")


@pytest.mark.parametrize("value", ["run", "_run", "Class.method", "Class._helper", "f2"])
def test_handler_name_accepts(value: str) -> None:
    assert v.check_handler_name("method", value) == value


@pytest.mark.parametrize(
    "value",
    [
        "a.b.c",
        "__init__",
        "__call__",
        "Class.__init__",
        "__Private.method",
        "__x",
        ".method",
        "method.",
        "1run",
        "run()",
        "run\n",
        "",
        "x\x00",
        None,
        3,
    ],
    ids=repr,
)
def test_handler_name_rejects(value: object) -> None:
    rejects(lambda: v.check_handler_name("method", value), "method")


def test_handler_name_error_names_the_argument_given() -> None:
    rejects(lambda: v.check_handler_name("initialise_method", "a.b.c"), "initialise_method")
    rejects(lambda: v.check_handler_name("shutdown_method", "__del__"), "shutdown_method")


# --- page_size, status, sort direction ----------------------------------------


@pytest.mark.parametrize("value", [1, 20, 1000])
def test_page_size_accepts(value: int) -> None:
    assert v.check_page_size(value) == value


@pytest.mark.parametrize("value", [0, -1, 1001, 10**100, True, 20.0, "20", None], ids=repr)
def test_page_size_rejects(value: object) -> None:
    rejects(lambda: v.check_page_size(value), "page_size")


@pytest.mark.parametrize("status", list(TaskStatus))
def test_status_accepts_enums_and_values(status: TaskStatus) -> None:
    assert v.check_status(status) is status
    assert v.check_status(status.value) is status
    assert v.check_status(None) is None


@pytest.mark.parametrize(
    "value", ["PENDING", "Pending", "done", "", "pending; DROP TABLE tasks", 0, True, ["pending"]]
)
def test_status_rejects(value: object) -> None:
    error = rejects(lambda: v.check_status(value), "status")
    assert "pending, processing, success, failed, cancelled" in error.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("asc", SortDirection.ASCENDING),
        ("desc", SortDirection.DESCENDING),
        (SortDirection.ASCENDING, SortDirection.ASCENDING),
        (SortDirection.DESCENDING, SortDirection.DESCENDING),
    ],
)
def test_sort_direction_accepts(value: object, expected: SortDirection) -> None:
    assert v.check_sort_direction(value) is expected


@pytest.mark.parametrize(
    "value",
    ["ASC", "ascending", "asc; DROP TABLE tasks", "desc, (select 1)", "", None, 1, True],
    ids=repr,
)
def test_sort_direction_rejects(value: object) -> None:
    rejects(lambda: v.check_sort_direction(value), "sort_direction")


# --- fuzz: only TaskValidationError ever comes out ----------------------------

fuzz_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30),
    st.floats(),
    st.text(),
    st.binary(max_size=10),
    st.timedeltas(),
    st.datetimes(),
    st.lists(st.integers(), max_size=2),
    st.sampled_from(["x'; DROP TABLE tasks; --", "\ud800", "\x00", -0.0, math.nan, 10**100]),
)
CHECKS: list[Callable[[Any], object]] = [
    lambda x: v.check_identifier_text("task_type", x),
    v.check_task_id,
    lambda x: v.check_count("retry_count", x, nullable=True),
    lambda x: v.check_optional_positive_int("max_worker_count", x),
    lambda x: v.check_duration("retry_interval", x, nullable=True),
    lambda x: v.check_duration("execution_timeout", x, positive=True),
    v.check_retain_for,
    lambda x: v.check_aware_datetime("run_at", x),
    v.check_module_path,
    lambda x: v.check_handler_name("method", x),
    v.check_page_size,
    v.check_status,
    v.check_sort_direction,
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CHECKS), fuzz_values)
def test_checks_raise_only_task_validation_error(
    check: Callable[[Any], object], value: object
) -> None:
    message = ""
    try:
        check(value)
    except TaskValidationError as exc:
        message = str(exc)
    assert len(message) <= MESSAGE_LIMIT
