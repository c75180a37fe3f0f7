from __future__ import annotations

import math
import pickle
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.core.codec import BlobFormatError, decode, encode, header_of

VERSION = (sys.version_info.major, sys.version_info.minor)


class Point:
    """A plain user class, pickled by reference to this module."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def module_level_function(x: int) -> int:
    return x + 1


def make_adder(n: int) -> Callable[[int], int]:
    def add(x: int) -> int:
        return x + n

    return add


def with_version(blob: bytes, major: int, minor: int) -> bytes:
    return blob[:3] + bytes((major, minor)) + blob[5:]


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -1,
        10**100,
        1.5,
        -0.0,
        float("inf"),
        "text",
        "ünïcødé \U0001f600",
        "lone \ud800 surrogate",
        "",
        b"\x00\xff bytes",
        bytearray(b"abc"),
        [1, [2, [3]]],
        (1, "two", 3.0),
        {"a": {"b": [1, 2]}, 3: None},
        {1, 2, 3},
        frozenset({"x"}),
        datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC),
        Decimal("3.14159"),
        Fraction(1, 3),
        complex(1, -2),
        Point(1, 2),
        b"x" * 1_000_000,
    ],
    ids=lambda value: repr(value)[:30],
)
def test_round_trip(value: Any) -> None:
    back = decode(encode(value))
    assert back == value
    assert type(back) is type(value)


def test_round_trip_nan() -> None:
    assert math.isnan(decode(encode(float("nan"))))


def test_decode_returns_a_fresh_copy() -> None:
    value = {"items": [1, 2]}
    blob = encode(value)
    first = decode(blob)
    first["items"].append(3)
    assert decode(blob) == {"items": [1, 2]}
    value["items"].append(99)
    assert decode(blob) == {"items": [1, 2]}


def test_lambda_is_pickled_by_value() -> None:
    double = lambda x: x * 2  # noqa: E731
    back = decode(encode(double))
    assert back is not double
    assert back(21) == 42


def test_closure_is_pickled_by_value_with_its_cell() -> None:
    add_five = make_adder(5)
    back = decode(encode(add_five))
    assert back is not add_five
    assert back(3) == 8


def test_module_level_function_is_pickled_by_reference() -> None:
    assert decode(encode(module_level_function)) is module_level_function


def test_header_names_cloudpickle_and_this_python() -> None:
    blob = encode({"a": 1})
    assert blob[:3] == b"TEc"
    assert blob[3:5] == bytes(VERSION)
    assert header_of(blob) == ("cloudpickle", VERSION)


@pytest.mark.parametrize(("major", "minor"), [(3, 99), (2, 7), (VERSION[0], VERSION[1] + 1)])
def test_blob_from_another_python_is_a_format_error(major: int, minor: int) -> None:
    blob = with_version(encode([1, 2, 3]), major, minor)
    assert header_of(blob) == ("cloudpickle", (major, minor))
    with pytest.raises(BlobFormatError, match=rf"written by Python {major}\.{minor}") as info:
        decode(blob)
    assert f"cannot be read by Python {VERSION[0]}.{VERSION[1]}" in str(info.value)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"T",
        b"TEc\x03",
        b"garbage, not a blob",
        b"\x00" * 64,
        pickle.dumps([1, 2, 3], protocol=5),
        b"XEc" + bytes(VERSION) + pickle.dumps(1),
    ],
    ids=repr,
)
def test_garbage_is_a_format_error(blob: bytes) -> None:
    with pytest.raises(BlobFormatError, match="bad header"):
        header_of(blob)
    with pytest.raises(BlobFormatError):
        decode(blob)


def test_unknown_serializer_tag_is_a_format_error() -> None:
    blob = b"TEj" + encode(1)[3:]
    with pytest.raises(BlobFormatError, match="unknown serializer"):
        decode(blob)


def test_blob_format_error_is_a_value_error() -> None:
    assert issubclass(BlobFormatError, ValueError)


@pytest.mark.parametrize(
    ("body", "error"),
    [(b"\xff\xff", pickle.UnpicklingError), (b"", EOFError)],
)
def test_corrupt_body_lets_the_unpicklers_error_through(
    body: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        decode(encode(None)[:5] + body)


def _generator() -> Any:
    yield 1


@pytest.mark.parametrize(
    "make",
    [threading.Lock, threading.RLock, lambda: _generator(), lambda: {"nested": threading.Lock()}],
)
def test_unpicklable_value_raises_from_encode(make: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match="pickle"):
        encode(make())


def test_every_blob_starts_with_the_same_header() -> None:
    assert encode(1)[:5] == encode("x")[:5] == b"TEc" + bytes(VERSION)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
        | st.tuples(children, children)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_round_trip_property(value: Any) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize("value", [None, True, 0, -(2**70), 1.5, "", "text é", b"\x00bytes"])
def test_plain_values_encode_to_the_same_blob_as_cloudpickle(value: object) -> None:
    # The fast path for plain values must not change a single byte of the stored format.
    import cloudpickle

    blob = encode(value)
    assert header_of(blob) == header_of(encode([]))
    assert blob[5:] == cloudpickle.dumps(value, protocol=5)
    assert decode(blob) == value
