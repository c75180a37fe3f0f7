"""Hostile argument values for the fuzz tests (faults.md#fault-38 to #fault-39).

``junk()`` mixes every kind of wrong value: wrong types, NaN, infinities and -0.0, huge and
negative ints, bools where ints are expected, None, unicode with NUL and lone surrogates, very
long strings, SQL-looking strings, naive and extreme datetimes and timedeltas, containers and
plain objects.  Some of these are valid for some arguments; the tests accept a success there.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

SQL = (
    "x'; DROP TABLE tasks; --",
    "date_created; DROP TABLE tasks",
    "status desc, (select 1)",
    "asc; DELETE FROM tasks",
    "' OR '1'='1",
    "1) OR (1=1",
    "%s",
    "?",
    "${jndi:ldap://x}",
    "pending' --",
)
LONG = ("x" * 1_000_000, "é" * 300_000, "\0" * 10_000)

_numbers = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**100), max_value=10**100),
    st.sampled_from([10**100, -(10**100), 2**63, 2**63 - 1, -(2**63) - 1, 2**53 + 1, -1, 0]),
    st.booleans(),
)
_texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec=None, categories=["Cs"]), min_size=1, max_size=3),
    st.text(alphabet=st.characters(blacklist_categories=[]), max_size=20).map(lambda s: s + "\0"),
    st.sampled_from(SQL),
    st.sampled_from(LONG),
    st.sampled_from(["", " ", "\n", "\ud800", "a\udfffb", "pending", "PENDING", "asc", "desc"]),
)
_times = st.one_of(
    st.datetimes(),  # naive
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from([datetime.min, datetime.max, datetime.max.replace(tzinfo=UTC)]),
    st.sampled_from([datetime.min.replace(tzinfo=UTC)]),
    st.timedeltas(),
    st.sampled_from([timedelta.max, timedelta.min, timedelta(0), timedelta(microseconds=-1)]),
)
_other = st.one_of(
    st.none(),
    st.binary(max_size=20),
    st.just(object()),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.tuples(st.integers()),
    st.sets(st.integers(), max_size=2),
    st.just(type),
    st.just(Ellipsis),
)


def junk() -> st.SearchStrategy[Any]:
    """Any hostile value."""
    return st.one_of(_numbers, _texts, _times, _other)


def junk_or(*valid: Any) -> st.SearchStrategy[Any]:
    """A hostile value, or one of ``valid``."""
    return st.one_of(junk(), st.sampled_from(valid)) if valid else junk()
