"""The short PostgreSQL paths: one-statement creates and claims, finish notices for waiters.

Each path has a slower general form beside it (a transaction per create, a claim read row by
row, a watcher that polls); these tests hold the short forms to the same results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import attrs
import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import given, settings
from psycopg import sql

import taskengine
from taskengine.coordinator import publishing
from taskengine.core import transitions
from taskengine.stores import base
from tests.contract.factories import at, new
from tests.postgres import support as pg

pytestmark = pytest.mark.postgres

Status = taskengine.TaskStatus
HANDLERS = "tests.postgres.node_handlers"


@pytest.fixture
def store(schema: tuple[str, str]) -> Iterator[taskengine.PostgresStore]:
    opened = pg.make_store(*schema)
    opened.open()
    yield opened
    opened.close()


def _rows(dsn: str, name: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name, "tasks"))
        ).fetchone()
    assert found is not None
    return int(found[0])


# -- creates ----------------------------------------------------------------------------


def test_the_retry_of_a_create_skips_what_its_first_try_stored(
    store: taskengine.PostgresStore, schema: tuple[str, str]
) -> None:
    """A connection that broke mid-statement: the retry stores each task once, no error."""
    tasks = [new(), new()]
    store.insert_many(tasks)
    row = [value for task in tasks for value in store._insert_row(task)]
    query = store._sql.insert_notify_sql(2, idempotent=True)
    with psycopg.connect(schema[0], autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema[1])))
        conn.execute(query, [*row, "taskengine.x", "wake"])
    assert _rows(*schema) == 2
    assert [store.get(task.id) for task in tasks] == tasks


def test_a_duplicate_id_in_a_create_is_still_refused(store: taskengine.PostgresStore) -> None:
    task = new()
    store.insert_many([task])
    with pytest.raises(taskengine.StoreError, match="already stored"):
        store.insert_many([task])


def test_large_batches_and_keyed_tasks_take_the_transaction(
    store: taskengine.PostgresStore, schema: tuple[str, str]
) -> None:
    many = [new() for _ in range(store._sql.INSERT_ROWS + 1)]
    assert store.insert_many(many) == [task.id for task in many]
    keyed = attrs.evolve(new(), idempotency_key="k")
    again = attrs.evolve(new(), idempotency_key="k")
    assert store.insert_many([keyed]) == [keyed.id]
    assert store.insert_many([again]) == [keyed.id]
    assert _rows(*schema) == len(many) + 1


# -- claims -----------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    delays=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8),
    limit=st.integers(min_value=1, max_value=10),
    with_writes=st.booleans(),
)
def test_the_claim_in_sql_changes_exactly_what_transitions_claim_does(
    delays: Sequence[int], limit: int, with_writes: bool
) -> None:
    """The one-statement claim against the row-by-row one (any other callable), on twins."""
    with pg.fresh_schema() as (dsn, one), pg.fresh_schema() as (_, two):
        in_sql, each = pg.make_store(dsn, one), pg.make_store(dsn, two)
        try:
            tasks = [new(run_at=at(ms)) for ms in delays]
            extra = new("beta")
            for store in (in_sql, each):
                store.insert_many([*tasks, extra])
            now = at(15)
            expected = [
                transitions.claim(task, now, "node-x")
                for task in sorted(tasks, key=lambda t: (t.date_next_process, t.id))
                if task.date_next_process is not None and task.date_next_process <= now
            ][:limit]
            writes: list[base.Write] = [base.Delete(task_id=extra.id)] if with_writes else []
            applied, (claimed,) = in_sql.apply_and_claim(
                writes, [("alpha", limit)], now, transitions.Claim(now, "node-x")
            )
            plain_applied, (plain,) = each.apply_and_claim(
                writes, [("alpha", limit)], now, lambda task: transitions.claim(task, now, "node-x")
            )
            assert claimed == expected == plain
            assert applied == plain_applied == [True] * len(writes)
            assert [in_sql.get(t.id) for t in tasks] == [each.get(t.id) for t in tasks]
        finally:
            in_sql.close()
            each.close()


def test_a_claim_alone_takes_at_most_its_limit_and_skips_locked_rows(
    store: taskengine.PostgresStore, schema: tuple[str, str]
) -> None:
    tasks = [new(run_at=at(ms)) for ms in range(6)]
    store.insert_many(tasks)
    with psycopg.connect(schema[0]) as conn:
        # Another session holds the oldest row: the claim goes past it, never waits.
        conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(
                sql.Identifier(schema[1], "tasks")
            ),
            (tasks[0].id,),
        )
        claim = transitions.Claim(at(10), "n")
        _, (first,) = store.apply_and_claim([], [("alpha", 2)], at(10), claim)
        assert [t.id for t in first] == [tasks[1].id, tasks[2].id]
        conn.rollback()
    _, (rest,) = store.apply_and_claim([], [("alpha", 10)], at(10), claim)
    assert [t.id for t in rest] == [tasks[0].id, *[t.id for t in tasks[3:]]]


# -- waits across processes -------------------------------------------------------------


def test_a_wait_for_a_task_another_node_runs_returns_on_its_finish_notice(
    make_engine: Callable[..., taskengine.TaskEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the watcher's polling made minutes slow, only the notice can end the wait."""
    monkeypatch.setattr(publishing, "_WATCH_POLL_FIRST", 600.0)
    monkeypatch.setattr(publishing, "WATCH_POLL_MAX", 600.0)
    runner, client = make_engine(), make_engine()
    runner.register_handler("noop", HANDLERS, "noop")
    client.wait(client.create("noop", retain_for=60), timeout=30)  # warm pool
    started = time.monotonic()
    task_id = client.create("noop", retain_for=60)
    final = client.wait(task_id, timeout=timedelta(seconds=30))
    assert time.monotonic() - started < 10
    assert final.status is Status.SUCCESS
    assert final.node_identity == runner.node_identity
