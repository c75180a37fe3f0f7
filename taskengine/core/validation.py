"""Argument checks for every public method.

Each function returns the normalised value or raises ``TaskValidationError`` naming the argument
and (a truncated repr of) the value.  Callers validate everything before touching the store, so
a rejected call stores nothing.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Final

from taskengine.core import errors
from taskengine.core.states import SortDirection, TaskStatus

__all__ = [
    "check_aware_datetime",
    "check_count",
    "check_duration",
    "check_handler_name",
    "check_identifier_text",
    "check_module_path",
    "check_optional_positive_int",
    "check_page_size",
    "check_retain_for",
    "check_sort_direction",
    "check_status",
    "check_task_id",
]

#: Longest task type, idempotency key or node identity accepted.
MAX_NAME_LENGTH: Final = 255
#: Largest count accepted (fits a signed 64-bit column with room to spare).
MAX_COUNT: Final = 2**53
#: Longest duration accepted: a hundred years, so date arithmetic never overflows.
MAX_DURATION: Final = 100 * 365 * 86_400.0
#: Largest page of a query.
MAX_PAGE_SIZE: Final = 1000

_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_METHOD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def _fail(argument: str, value: object, reason: str) -> errors.TaskValidationError:
    return errors.TaskValidationError(argument, value, reason)


def check_identifier_text(argument: str, value: object) -> str:
    """A non-empty str of at most 255 characters, UTF-8 encodable, without NUL."""
    if not isinstance(value, str):
        raise _fail(argument, value, f"expected a non-empty str, got {type(value).__name__}")
    if not value:
        raise _fail(argument, value, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise _fail(argument, value, f"longer than {MAX_NAME_LENGTH} characters")
    if "\x00" in value:
        raise _fail(argument, value, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(argument, value, "not encodable as UTF-8 (lone surrogate)") from exc
    return value


def check_task_id(value: object) -> str:
    """A task id must be a str; other strings are simply unknown ids."""
    if not isinstance(value, str):
        raise _fail("task_id", value, f"expected a str, got {type(value).__name__}")
    return value


def check_count(argument: str, value: object, *, nullable: bool) -> int | None:
    """An int (never a bool) in 0..2**53, or None when ``nullable``."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(argument, value, f"expected an int >= 0, got {type(value).__name__}")
    if value < 0:
        raise _fail(argument, value, "must be >= 0")
    if value > MAX_COUNT:
        raise _fail(argument, value, f"must be <= {MAX_COUNT}")
    return value


def check_optional_positive_int(argument: str, value: object) -> int | None:
    """None, or an int (never a bool) in 1..2**53."""
    if value is None:
        return None
    count = check_count(argument, value, nullable=False)
    assert count is not None
    if count < 1:
        raise _fail(argument, value, "must be >= 1")
    return count


def check_duration(
    argument: str, value: object, *, nullable: bool = False, positive: bool = False
) -> float | None:
    """Seconds as a finite int/float (not bool) or a timedelta, >= 0 (> 0 when ``positive``)."""
    if value is None and nullable:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(argument, value, f"expected seconds or a timedelta, got {type(value).__name__}")
    else:
        try:
            seconds = float(value)
        except OverflowError as exc:
            raise _fail(argument, value, "too large") from exc
    if not math.isfinite(seconds):
        raise _fail(argument, value, "must be finite")
    if seconds < 0 or (positive and seconds == 0):
        raise _fail(argument, value, "must be > 0" if positive else "must be >= 0")
    if seconds > MAX_DURATION:
        raise _fail(argument, value, f"must be <= {MAX_DURATION:.0f} seconds")
    return seconds + 0.0  # normalises -0.0 to 0.0


def check_retain_for(value: object) -> float | None:
    """``retain_for``: None or -1 keep forever; otherwise seconds >= 0."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return None
    return check_duration("retain_for", value)


def check_aware_datetime(argument: str, value: object) -> datetime | None:
    """None, or a timezone-aware datetime, returned in UTC and cut to whole milliseconds.

    The value's ``tzinfo`` is asked for its offset once and never again: whatever it raises, or
    returns that is not an offset within a day, is rejected here rather than later.  So is a
    moment that has no UTC datetime (``datetime.min`` east of UTC, ``datetime.max`` west of it).
    Every store holds the millisecond count of any UTC datetime (years 1 to 9999).
    """
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise _fail(argument, value, f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise _fail(argument, value, "must be timezone-aware")
    try:
        # The base method: a subclass's override would be a second, unchecked source of offsets.
        offset = datetime.utcoffset(value)
    except Exception as exc:  # SystemExit / KeyboardInterrupt from a tzinfo propagate
        raise _fail(argument, value, f"its utcoffset() failed ({type(exc).__name__})") from exc
    if offset is None:
        raise _fail(argument, value, "must be timezone-aware")
    try:
        # Built from the fields, so the result is a plain datetime whatever the value's class.
        local = datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
        )
        moment = local - offset
    except OverflowError as exc:
        raise _fail(argument, value, "has no UTC datetime (out of range once converted)") from exc
    except Exception as exc:  # a datetime subclass whose fields are not what they claim
        raise _fail(argument, value, f"unreadable ({type(exc).__name__})") from exc
    # Cut after the conversion: an offset may carry microseconds of its own.
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000, tzinfo=UTC)


def check_module_path(value: object) -> str:
    """A dotted module path such as ``"myapp.workers.image"``."""
    text = check_identifier_text("module", value)
    if not _MODULE_RE.fullmatch(text):
        raise _fail("module", value, "expected a dotted module path")
    return text


def check_handler_name(argument: str, value: object) -> str:
    """A function name, or ``"Class.static_method"`` (one dotted level)."""
    text = check_identifier_text(argument, value)
    if not _METHOD_RE.fullmatch(text) or any(p.startswith("__") for p in text.split(".")):
        raise _fail(argument, value, "expected a name or Class.method, without dunders")
    return text


def check_page_size(value: object) -> int:
    """An int in 1..1000."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("page_size", value, f"expected an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise _fail("page_size", value, f"must be in 1..{MAX_PAGE_SIZE}")
    return value


def check_status(value: object) -> TaskStatus | None:
    """None, a ``TaskStatus``, or its string value."""
    if value is None:
        return None
    if isinstance(value, TaskStatus):
        return value
    if isinstance(value, str):
        try:
            return TaskStatus(value)
        except ValueError:
            pass
    raise _fail("status", value, "expected one of " + ", ".join(s.value for s in TaskStatus))


def check_sort_direction(value: object) -> SortDirection:
    """A ``SortDirection`` or ``"asc"``/``"desc"``."""
    if isinstance(value, SortDirection):
        return value
    if isinstance(value, str):
        try:
            return SortDirection(value)
        except ValueError:
            pass
    raise _fail("sort_direction", value, "expected 'asc' or 'desc'")
