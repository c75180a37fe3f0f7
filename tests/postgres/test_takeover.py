"""Taking over a dead node's attempts: restarts under the same identity, queue order, bounds.

* A node restarted under the identity of a node that was SIGKILLed (as systemd or Kubernetes
  restart one) must not keep the dead run's attempts alive by renewing their leases: each claim
  records the incarnation (``claim_token``) that made it, renewals touch only the attempts the
  node runs, and a starting node expires its identity's earlier claims at once.
* A re-queued attempt keeps the due time it had when it was claimed, so it runs before a
  backlog of tasks that became due after it.
* Every duration of ``PostgresStore`` has an upper bound, so a lease never overflows a
  PostgreSQL ``interval``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

import taskengine
from taskengine.core import errors
from taskengine.stores.postgres import schema as postgres_schema
from taskengine.stores.postgres import store as postgres
from tests.conftest import until
from tests.contract.factories import at, claimer, new
from tests.postgres import support as pg
from tests.postgres.cluster import Node, read_log

pytestmark = pytest.mark.postgres

Status = taskengine.TaskStatus


@pytest.fixture
def nodes_made() -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.kill()  # their attempts sleep long; a graceful stop would wait for them


def create(dsn: str, schema: str, payloads: list[dict[str, object]]) -> list[str]:
    """Create ``logged`` tasks from a non-dispatching engine (as an application would)."""
    engine = taskengine.TaskEngine(pg.make_store(dsn, schema, application_name="te-creator"))
    try:
        return engine.create_many("logged", payloads, retain_for=None, retry_count=None)
    finally:
        engine.stop()


def start_node(
    dsn: str, schema: str, name: str, workdir: Path, lease: float, made: list[Node]
) -> Node:
    """One node process with one worker, returned once it dispatches."""
    workdir.mkdir(exist_ok=True)
    node = Node(dsn, schema, name, workdir, workers=1, lease=lease)
    made.append(node)
    until(node.is_ready, timeout=90)
    return node


def runs_of(log: Path, task_id: str) -> list[tuple[int, str]]:
    return read_log(log).get(task_id, [])


def query(dsn: str, statement: sql.Composable, params: tuple[object, ...] = ()) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def execute(dsn: str, statement: sql.Composable) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


# -- a node restarted under the same identity --------------------------------------------


def test_a_node_restarted_under_the_same_identity_reruns_the_dead_runs_attempt_at_once(
    schema: tuple[str, str], tmp_path: Path, nodes_made: list[Node]
) -> None:
    dsn, name = schema
    taskengine.PostgresStore(dsn, schema=name).open()
    # The dead run's lease is long: only the restarted run could make the attempt run again.
    first = start_node(dsn, name, "n1", tmp_path / "first", 30.0, nodes_made)
    log = tmp_path / "runs.log"
    [task_id] = create(dsn, name, [{"log": str(log), "seconds": 120}])
    until(lambda: runs_of(log, task_id), timeout=60)
    first.kill()
    lease = 2.0
    second = start_node(dsn, name, "n1", tmp_path / "second", lease, nodes_made)
    ready_at = time.monotonic()
    # Without the fix the new run renewed the dead run's lease for as long as it lived.
    until(lambda: len(runs_of(log, task_id)) >= 2, timeout=lease + 3.0, step=0.05)
    assert time.monotonic() - ready_at < lease + 3.0
    assert runs_of(log, task_id) == [(1, "n1"), (2, "n1")]
    assert second.alive()
    reader = pg.make_store(dsn, name, application_name="te-reader")
    try:
        task = reader.get(task_id)
        assert task is not None
        assert task.status is Status.PROCESSING
        assert task.attempts == 2
        assert task.error is not None
        assert task.error.type == "WorkerCrashedError"
    finally:
        reader.close()


def test_a_store_renews_only_its_own_claims_and_expires_its_identitys_earlier_ones(
    schema: tuple[str, str],
) -> None:
    dsn, name = schema
    earlier, later = pg.make_store(dsn, name), pg.make_store(dsn, name)
    earlier.open()
    task = new(run_at=at(0))
    earlier.insert_many([task])
    [claimed] = earlier.claim_due("alpha", at(0), 1, claimer(at(0), "n1"))
    try:
        assert earlier.claim_token != later.claim_token
        assert later.renew_leases("n1") == []
        assert later.renew_held_leases("n1", [claimed.id]) == []
        assert earlier.renew_held_leases("n1", []) == []
        assert earlier.renew_held_leases("n1", [claimed.id]) == [claimed.id]
        assert earlier.renew_leases("n1") == [claimed.id]
        assert later.expired_claims(10) == []
        assert later.expire_earlier_claims("n2") == []
        assert earlier.expire_earlier_claims("n1") == []  # its own claims are not "earlier"
        assert later.expire_earlier_claims("n1") == [claimed.id]
        [(expired, due)] = later.expired_claims_with_due(10)
        assert expired == claimed
        assert due == at(0)
        assert earlier.renew_leases("n1") == [claimed.id]  # the old incarnation may still renew
    finally:
        earlier.close()
        later.close()


# -- a taken-over attempt keeps its place ------------------------------------------------


def test_a_taken_over_attempt_runs_before_a_backlog_that_became_due_after_it(
    schema: tuple[str, str], tmp_path: Path, nodes_made: list[Node]
) -> None:
    dsn, name = schema
    taskengine.PostgresStore(dsn, schema=name).open()
    lease = 3.0
    doomed = start_node(dsn, name, "doomed", tmp_path, lease, nodes_made)
    log = tmp_path / "runs.log"
    [held] = create(dsn, name, [{"log": str(log), "seconds": 120}])
    until(lambda: runs_of(log, held), timeout=60)
    # The survivor starts while the doomed node holds the task's only claim.
    survivor = start_node(dsn, name, "survivor", tmp_path, lease, nodes_made)
    doomed.kill()
    killed_at = time.monotonic()
    backlog = create(dsn, name, [{"log": str(log), "seconds": 0.02} for _ in range(400)])
    # Before the fix the attempt was re-queued due "now" and waited behind all 400 (> 8 s).
    until(lambda: len(runs_of(log, held)) >= 2, timeout=lease + 2.0 + 1.0, step=0.05)
    taken_over_after = time.monotonic() - killed_at
    assert taken_over_after < lease + 2.0 + 1.0
    runs = read_log(log)
    assert runs[held] == [(1, "doomed"), (2, "survivor")]
    ran_before = sum(1 for task_id in backlog if task_id in runs)
    assert ran_before < len(backlog) // 2, (ran_before, taken_over_after)
    assert survivor.alive()


def test_expired_claims_report_the_due_time_each_had_when_claimed(
    schema: tuple[str, str],
) -> None:
    dsn, name = schema
    dead = pg.make_store(dsn, name, lease_timeout=0.1, heartbeat_interval=0.05)
    dead.open()
    tasks = [new(run_at=at(k)) for k in (30, 10, 20)]
    dead.insert_many(tasks)
    claimed = dead.claim_due("alpha", at(100), 3, claimer(at(100), "dead"))
    assert [task.date_next_process for task in claimed] == [None] * 3

    def expired() -> list[tuple[taskengine.BackgroundTask, object]]:
        return dead.expired_claims_with_due(10)

    found = until(lambda: len(expired()) == 3 and expired())
    assert {task.id: due for task, due in found} == {
        task.id: task.date_next_process for task in tasks
    }
    dead.close()


# -- upper bounds of durations ------------------------------------------------------------

_TOO_LONG = st.one_of(
    st.floats(min_value=postgres.MAX_SECONDS, exclude_min=True, allow_infinity=False),
    st.integers(min_value=int(postgres.MAX_SECONDS) + 1, max_value=10**400),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    option=st.sampled_from(["lease_timeout", "heartbeat_interval", "connect_timeout"]),
    value=_TOO_LONG,
)
def test_durations_beyond_one_day_are_validation_errors_naming_them(
    option: str, value: float
) -> None:
    with pytest.raises(errors.TaskValidationError, match=option):
        taskengine.PostgresStore("postgresql://localhost/x", **{option: value})  # type: ignore[arg-type]


def test_the_longest_lease_accepted_claims_and_renews_on_the_server(
    schema: tuple[str, str],
) -> None:
    dsn, name = schema
    longest = postgres.MAX_SECONDS
    store = pg.make_store(dsn, name, lease_timeout=longest, connect_timeout=longest)
    assert store.lease_timeout == longest
    store.open()
    try:
        task = new(run_at=at(0))
        store.insert_many([task])
        [claimed] = store.claim_due("alpha", at(0), 1, claimer(at(0), "n1"))
        assert store.renew_leases("n1") == [claimed.id]
        [(seconds,)] = query(
            dsn,
            sql.SQL("SELECT extract(epoch FROM lease_until - now()) FROM {}").format(
                sql.Identifier(name, "tasks")
            ),
        )
        assert longest - 60 < float(seconds) <= longest
    finally:
        store.close()


# -- the schema migration ----------------------------------------------------------------


def test_a_version_1_schema_is_upgraded_and_its_claims_still_expire(
    schema: tuple[str, str],
) -> None:
    dsn, name = schema
    store = pg.make_store(dsn, name, lease_timeout=0.1, heartbeat_interval=0.05)
    store.open()
    task = new(run_at=at(0))
    store.insert_many([task])
    store.close()
    table = sql.Identifier(name, "tasks")
    # What a version 1 node left: no claim columns, a claim with only a lease.
    execute(
        dsn,
        sql.SQL("ALTER TABLE {} DROP COLUMN claim_token, DROP COLUMN claimed_due").format(table),
    )
    execute(
        dsn,
        sql.SQL(
            "UPDATE {} SET status = 'processing', attempts = 1, node_identity = 'old',"
            " date_next_process = NULL, lease_until = now() - interval '1 second'"
        ).format(table),
    )
    execute(
        dsn, sql.SQL("UPDATE {} SET version = 1").format(sql.Identifier(name, "schema_version"))
    )
    upgraded = pg.make_store(dsn, name)
    upgraded.open()
    try:
        [(version,)] = query(
            dsn, sql.SQL("SELECT version FROM {}").format(sql.Identifier(name, "schema_version"))
        )
        assert version == postgres_schema.SCHEMA_VERSION == 2
        [(expired, due)] = upgraded.expired_claims_with_due(10)
        assert (expired.id, expired.status, due) == (task.id, Status.PROCESSING, None)
        assert upgraded.expire_earlier_claims("old") == [task.id]  # no token: an earlier run
    finally:
        upgraded.close()
