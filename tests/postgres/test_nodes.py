"""Several engine nodes (processes) on one PostgreSQL table (faults.md#fault-32 to #fault-34).

Each node is ``node_driver.py`` in its own process group; the handler appends
``"<id> <attempt> <node>"`` to one log with O_APPEND, which counts executions exactly.

The PostgreSQL outage is made without stopping the shared server: the nodes connect as a role
of their own, which is set to ``NOLOGIN`` for four seconds while every session it has (they all
carry the test schema as ``application_name``) is ended with ``pg_terminate_backend``.  For the
nodes that is a server that is down: open connections drop, the LISTEN sessions included, and
every reconnection is refused until the outage ends.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskengine
from tests.conftest import until
from tests.postgres import support as pg
from tests.postgres.cluster import Node, read_log, start_nodes, status_counts

pytestmark = pytest.mark.postgres

Status = taskengine.TaskStatus


@pytest.fixture
def nodes_made() -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.stop()


def create(dsn: str, schema: str, payloads: list[dict[str, object]]) -> list[str]:
    """Create tasks from a separate, non-dispatching engine (as an application would)."""
    engine = taskengine.TaskEngine(pg.make_store(dsn, schema, application_name="te-creator"))
    try:
        return engine.create_many("logged", payloads, retain_for=None, retry_count=None)
    finally:
        engine.stop()


def finished(dsn: str, schema: str, total: int) -> bool:
    return status_counts(dsn, schema).get("success", 0) == total


SLOW = pytest.mark.skipif(
    not os.environ.get("TASKENGINE_SLOW_TESTS"), reason="set TASKENGINE_SLOW_TESTS=1 to run"
)


@pytest.mark.parametrize(
    "total", [1000, pytest.param(10_000, marks=[pytest.mark.slow, SLOW])], ids=str
)
def test_three_nodes_run_each_task_exactly_once(
    schema: tuple[str, str], tmp_path: Path, nodes_made: list[Node], total: int
) -> None:
    dsn, name = schema
    taskengine.PostgresStore(dsn, schema=name).open()  # the schema exists before nodes race
    nodes_made += start_nodes(dsn, name, tmp_path, count=3, workers=2, lease=30.0)
    log = tmp_path / "runs.log"
    ids = create(dsn, name, [{"log": str(log)} for _ in range(total)])
    until(lambda: finished(dsn, name, total), timeout=60 + total / 10, step=0.2)
    runs = read_log(log)
    assert set(runs) == set(ids)
    assert all(len(lines) == 1 and lines[0][0] == 1 for lines in runs.values())
    per_node = {node.name: 0 for node in nodes_made}
    for [(_, node)] in runs.values():
        per_node[node] += 1
    assert sum(per_node.values()) == total
    assert sum(1 for count in per_node.values() if count) >= 2, per_node
    assert all(node.alive() for node in nodes_made)


def test_a_killed_node_loses_its_claims_to_the_others(
    schema: tuple[str, str], tmp_path: Path, nodes_made: list[Node]
) -> None:
    dsn, name = schema
    taskengine.PostgresStore(dsn, schema=name).open()
    # Survivors would have to stall for 2 s (lease minus heartbeat) to lose claims themselves.
    nodes_made += start_nodes(dsn, name, tmp_path, count=3, workers=2, lease=3.0)
    log = tmp_path / "runs.log"
    total = 240
    ids = create(dsn, name, [{"log": str(log), "seconds": 0.05} for _ in range(total)])
    victim = nodes_made[1]
    until(
        lambda: sum(1 for r in read_log(log).values() for _, n in r if n == victim.name) >= 10,
        timeout=120,
    )
    victim.kill()
    killed_at = time.monotonic()
    until(lambda: finished(dsn, name, total), timeout=120, step=0.2)
    runs = read_log(log)
    assert set(runs) == set(ids)
    duplicated = {task_id: lines for task_id, lines in runs.items() if len(lines) > 1}
    for lines in duplicated.values():
        # Only attempts that were running on the killed node were cut short and re-run.
        assert all(node == victim.name for _, node in lines[:-1]), lines
        assert [attempt for attempt, _ in lines] == sorted({a for a, _ in lines})
    # At most one running attempt per worker of the killed node (2 workers).
    assert len(duplicated) <= 2, duplicated
    survivors = [node for node in nodes_made if node is not victim]
    assert all(node.alive() for node in survivors)
    engine = taskengine.TaskEngine(pg.make_store(dsn, name, application_name="te-reader"))
    try:
        for task_id in ids:
            task = engine.get(task_id)
            assert task is not None
            assert task.status is Status.SUCCESS
            assert task.attempts >= len(runs[task_id])
            if task.attempts > 1:
                assert task.node_identity != victim.name
    finally:
        engine.stop()
    assert time.monotonic() - killed_at < 60


def test_a_paused_node_loses_its_claims_and_its_late_outcomes_are_fenced(
    schema: tuple[str, str], tmp_path: Path, nodes_made: list[Node]
) -> None:
    """faults.md#fault-33: SIGSTOP a node past its lease; SIGCONT it once others re-ran its work."""
    dsn, name = schema
    taskengine.PostgresStore(dsn, schema=name).open()
    nodes_made += start_nodes(dsn, name, tmp_path, count=2, workers=2, lease=3.0)
    paused = nodes_made[1]
    log = tmp_path / "runs.log"
    total = 40
    ids = create(dsn, name, [{"log": str(log), "seconds": 0.4} for _ in range(total)])
    until(lambda: sum(1 for r in read_log(log).values() for _, n in r if n == paused.name) >= 4)
    os.killpg(paused.proc.pid, signal.SIGSTOP)
    try:
        # Another node re-runs an attempt the paused node had started.
        until(
            lambda: any(
                lines[0][1] == paused.name and len(lines) > 1 for lines in read_log(log).values()
            ),
            timeout=60,
        )
    finally:
        os.killpg(paused.proc.pid, signal.SIGCONT)
    until(lambda: finished(dsn, name, total), timeout=120, step=0.2)
    runs = read_log(log)
    assert set(runs) == set(ids)
    engine = taskengine.TaskEngine(pg.make_store(dsn, name, application_name="te-reader"))
    try:
        for task_id, lines in runs.items():
            if len(lines) == 1:
                continue
            assert all(node == paused.name for _, node in lines[:-1]), lines
            final = engine.get(task_id)
            assert final is not None
            # The paused node's late success matched no row: the re-run's outcome stands.
            assert final.node_identity == lines[-1][1]
            assert final.attempts >= lines[-1][0]
    finally:
        engine.stop()
    assert all(node.alive() for node in nodes_made)


def test_everything_completes_after_a_four_second_database_outage(
    tmp_path: Path, nodes_made: list[Node]
) -> None:
    """faults.md#fault-34: the nodes' role is locked out and its sessions ended for four seconds."""
    dsn = pg.dsn()
    name = pg.new_schema_name()
    with pg.outage_role(dsn, name) as node_dsn:
        taskengine.PostgresStore(node_dsn, schema=name).open()
        nodes_made += start_nodes(node_dsn, name, tmp_path, count=3, workers=2, lease=10.0)
        log = tmp_path / "runs.log"
        total = 300
        ids = create(dsn, name, [{"log": str(log), "seconds": 0.05} for _ in range(total)])
        until(lambda: len(read_log(log)) >= 30, timeout=120)
        pg.set_login(dsn, name, allowed=False)
        try:
            ended = pg.terminate_backends(dsn, name)
            time.sleep(0.5)  # part of the outage, not a synchronisation
            ended += pg.terminate_backends(dsn, name)  # sessions that were opening meanwhile
            started_during = len(read_log(log))
            time.sleep(3.5)  # the rest of the four seconds
            assert len(read_log(log)) == started_during  # nothing could be claimed
        finally:
            pg.set_login(dsn, name, allowed=True)
        assert ended >= 3  # every node had sessions that were cut
        assert started_during < total  # the outage really was mid-run
        until(lambda: finished(dsn, name, total), timeout=120, step=0.2)
        runs = read_log(log)
        assert set(runs) == set(ids)
        assert all(node.alive() for node in nodes_made)
        for node in nodes_made:
            assert node.stop() == 0, node.stderr_path.read_text()[-3000:]


def test_everything_completes_while_sessions_are_cut_again_and_again(
    schema: tuple[str, str], tmp_path: Path, nodes_made: list[Node]
) -> None:
    """faults.md#fault-34: sessions dropped mid-transaction for three seconds (server stays up)."""
    dsn, name = schema
    taskengine.PostgresStore(dsn, schema=name).open()
    nodes_made += start_nodes(dsn, name, tmp_path, count=3, workers=2, lease=10.0)
    log = tmp_path / "runs.log"
    total = 300
    ids = create(dsn, name, [{"log": str(log), "seconds": 0.02} for _ in range(total)])
    until(lambda: len(read_log(log)) >= 30, timeout=120)
    ended = 0
    cutting_until = time.monotonic() + 3.0
    while time.monotonic() < cutting_until:
        ended += pg.terminate_backends(dsn, name)
        time.sleep(0.02)  # the pace of the cuts, not a synchronisation
    assert ended >= 3
    until(lambda: finished(dsn, name, total), timeout=120, step=0.2)
    assert set(read_log(log)) == set(ids)
    assert all(node.alive() for node in nodes_made)
