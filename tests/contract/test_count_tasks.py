"""``TaskStore.count_tasks`` (the counts behind ``engine.stats()``), against every store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.stores import base

from .factories import T0, Status, at, drive, new
from .test_store_contract import STORE_FACTORIES


@pytest.fixture(params=sorted(STORE_FACTORIES), name="kind")
def kind_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _open(kind: str, tmp: Path) -> base.TaskStore:
    store = STORE_FACTORIES[kind](tmp)
    store.open()
    return store


def _key(count: base.TaskCount) -> tuple[str, str]:
    return count.task_type, count.status.value


def test_empty_store_counts_nothing(kind: str, tmp_path: Path) -> None:
    store = _open(kind, tmp_path)
    try:
        assert store.count_tasks(T0) == []
    finally:
        store.close()


def test_groups_sum_attempts_and_take_minimum_dates(kind: str, tmp_path: Path) -> None:
    store = _open(kind, tmp_path)
    try:
        early = new("alpha", now=at(0), run_at=at(500))
        late = new("alpha", now=at(100))
        failed = drive(new("alpha", now=at(50)), Status.FAILED, at(60))
        other = drive(new("beta", now=at(70)), Status.PROCESSING, at(80))
        store.insert_many([early, late, failed, other])
        got = {_key(c): c for c in store.count_tasks(at(1000))}
        assert set(got) == {("alpha", "pending"), ("alpha", "failed"), ("beta", "processing")}
        pending = got["alpha", "pending"]
        assert (pending.count, pending.attempts) == (2, 0)
        assert pending.oldest_created == at(0)
        assert pending.earliest_next_process == at(100)  # ``late`` is due at creation
        assert (got["alpha", "failed"].count, got["alpha", "failed"].attempts) == (1, 1)
        assert got["alpha", "failed"].earliest_next_process is None
        assert got["beta", "processing"].attempts == 1
    finally:
        store.close()


def test_expired_tasks_are_not_counted(kind: str, tmp_path: Path) -> None:
    store = _open(kind, tmp_path)
    try:
        kept = drive(new("alpha", retain_for=10.0), Status.SUCCESS, at(0))
        store.insert_many([kept])
        assert [c.count for c in store.count_tasks(at(9_999))] == [1]
        assert store.count_tasks(at(10_000)) == []  # retention ended: invisible, like query
    finally:
        store.close()


_STATUSES = st.sampled_from(list(Status))
_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        _STATUSES,
        st.integers(0, 5_000),
        st.sampled_from([None, 1.0, 100.0]),
    ),
    max_size=25,
)


@pytest.mark.parametrize("kind", sorted(STORE_FACTORIES))
@given(rows=_ROWS, now_ms=st.integers(0, 200_000))
def test_counts_match_a_brute_force_model(
    kind: str, rows: list[tuple[str, Status, int, float | None]], now_ms: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = _open(kind, Path(tmp))
        try:
            tasks = [
                drive(new(t, now=at(ms), retain_for=keep), status, at(ms + 1))
                for t, status, ms, keep in rows
            ]
            store.insert_many(tasks)
            now = at(now_ms)
            visible = [x for x in tasks if x.date_retain_until is None or x.date_retain_until > now]
            expected: dict[tuple[str, str], base.TaskCount] = {}
            for x in visible:
                key = (x.type, x.status.value)
                dues = [d for d in (x.date_next_process,) if d is not None]
                found = expected.get(key)
                if found is None:
                    expected[key] = base.TaskCount(
                        task_type=x.type,
                        status=x.status,
                        count=1,
                        attempts=x.attempts,
                        oldest_created=x.date_created,
                        earliest_next_process=min(dues, default=None),
                    )
                    continue
                due = [d for d in (found.earliest_next_process, *dues) if d is not None]
                expected[key] = attrs.evolve(
                    found,
                    count=found.count + 1,
                    attempts=found.attempts + x.attempts,
                    oldest_created=min(found.oldest_created, x.date_created),
                    earliest_next_process=min(due, default=None),
                )
            assert {_key(c): c for c in store.count_tasks(now)} == expected
        finally:
            store.close()
