"""A node cut off from PostgreSQL by a real, silent network partition (faults.md#fault-33 and 34).

One node runs in a network namespace of its own and reaches the server through a veth link
and a relay in the test process (see ``netfaults``); the other connects directly.  Cutting
the link drops packets without a reset, so the cut-off node's connections hang until its TCP
keepalives and ``tcp_user_timeout`` end them.  Needs root and ``ip`` (iproute2): the test skips
without them, and fails instead under ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import taskengine
from tests.conftest import until
from tests.postgres import netfaults
from tests.postgres import support as pg
from tests.postgres.cluster import DRIVER, ROOT, Node, status_counts

pytestmark = pytest.mark.postgres

LEASE = 3.0


class NamespacedNode(Node):
    """A ``node_driver.py`` process inside ``link``'s namespace (its own process group)."""

    def __init__(
        self,
        link: netfaults.Link,
        dsn: str,
        schema: str,
        name: str,
        workdir: Path,
        types: tuple[str, ...],
    ) -> None:
        self.name = name
        self.ready = workdir / f"{name}.ready"
        self.stderr_path = workdir / f"{name}.stderr"
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        argv = [sys.executable, str(DRIVER), dsn, schema, name, "2", str(LEASE), str(self.ready)]
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                link.command([*argv, ",".join(types)]),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )


@pytest.fixture
def link(schema: tuple[str, str]) -> Iterator[netfaults.Link]:
    netfaults.require_namespaces()
    params = psycopg.conninfo.conninfo_to_dict(schema[0])
    server = (str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))
    with netfaults.Link.create(server) as made:
        yield made
    # The test's namespace and veth pair are gone, whatever happened in it.
    assert made.namespace not in netfaults.namespaces_here()
    assert made.root_end not in netfaults.interfaces_here()


@pytest.fixture
def nodes_made(link: netfaults.Link) -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    link.heal()  # a test that failed mid-partition: let the nodes stop gracefully
    for node in made:
        node.stop()


def create(dsn: str, schema: str, task_type: str, payloads: list[object]) -> list[str]:
    """Create tasks from a separate, non-dispatching engine (as an application would)."""
    engine = taskengine.TaskEngine(pg.make_store(dsn, schema, application_name="te-creator"))
    try:
        return engine.create_many(task_type, payloads, retain_for=None, retry_count=None)
    finally:
        engine.stop()


def held_by(dsn: str, schema: str, node: str) -> frozenset[str]:
    """Ids of the processing tasks whose claim is ``node``'s, as the server sees them."""
    query = sql.SQL("SELECT id FROM {} WHERE status = 'processing' AND node_identity = %s").format(
        sql.Identifier(schema, "tasks")
    )
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return frozenset(row[0] for row in conn.execute(query, (node,)))


def log_lines(path: Path) -> list[tuple[str, int, str]]:
    """``(task id, attempt, node)`` per execution, in the order they started."""
    if not path.exists():
        return []
    return [
        (task_id, int(attempt), node)
        for task_id, attempt, node in (line.split() for line in path.read_text().splitlines())
    ]


def test_a_partitioned_node_loses_its_claims_and_its_late_outcomes_are_fenced(
    schema: tuple[str, str],
    link: netfaults.Link,
    tmp_path: Path,
    nodes_made: list[Node],
) -> None:
    dsn, name = schema
    taskengine.PostgresStore(dsn, schema=name).open()
    # Only the cut-off node runs "started" tasks: they show when it works again.
    cut = NamespacedNode(link, link.dsn(dsn), name, "cut", tmp_path, ("logged", "started"))
    nodes_made.append(cut)
    other = Node(dsn, name, "other", tmp_path, workers=2, lease=LEASE, types=("logged",))
    nodes_made.append(other)
    for node in nodes_made:
        until(node.is_ready, timeout=60)
    log = tmp_path / "runs.log"
    total = 40
    ids = create(dsn, name, "logged", [{"log": str(log), "seconds": 0.5} for _ in range(total)])
    until(lambda: held_by(dsn, name, "cut") and len(log_lines(log)) >= 4, timeout=30)

    link.cut()
    cut_at = time.monotonic()
    before = len(log_lines(log))
    previous: list[frozenset[str]] = []

    def settled() -> frozenset[str] | None:
        # A commit already past the link when it went down may still land: read until stable.
        previous.append(held_by(dsn, name, "cut"))
        return previous[-1] if len(previous) > 1 and previous[-1] == previous[-2] else None

    held = until(settled, timeout=2, step=0.05)
    try:
        # The other node re-queues the cut-off node's claims once their lease ends, and runs them.
        until(lambda: not held & held_by(dsn, name, "cut"), timeout=30, step=0.05)
        requeued = time.monotonic() - cut_at
        until(
            lambda: held <= {task for task, _, node in log_lines(log) if node == "other"},
            timeout=30,
            step=0.05,
        )
        taken_over = time.monotonic() - cut_at
        during = log_lines(log)[before:]
    finally:
        link.heal()
    healed_at = time.monotonic()
    # Cut off, the node started nothing it had not claimed before the cut.
    assert {task for task, _, node in during if node == "cut"} <= held

    # Healed, it claims again: only it runs "started" tasks.
    late = create(dsn, name, "started", [None] * 4)
    until(lambda: status_counts(dsn, name).get("success", 0) == total + len(late), timeout=40)
    recovered = time.monotonic() - healed_at
    print(
        f"\npartition: {len(held)} claim(s) re-queued {requeued:.1f}s and all re-run "
        f"{taken_over:.1f}s after the cut; "
        f"the cut-off node ran new tasks {recovered:.1f}s after the link healed"
    )

    runs = log_lines(log)
    assert {task for task, _, _ in runs} == set(ids)
    engine = taskengine.TaskEngine(pg.make_store(dsn, name, application_name="te-reader"))
    try:
        for task_id in ids:
            lines = [(attempt, node) for task, attempt, node in runs if task == task_id]
            final = engine.get(task_id)
            assert final is not None
            assert final.status is taskengine.TaskStatus.SUCCESS
            # The other node never lost a claim: it ran each task at most once, and last.
            assert [node for _, node in lines].count("other") <= 1, lines
            if task_id in held:
                # Re-run by the other node; the cut-off node's late success matched no row.
                assert lines[-1][1] == "other", lines
                assert final.node_identity == "other"
                assert final.attempts == lines[-1][0] >= 2
            else:
                assert len(lines) == 1, lines
        for task_id in late:
            final = engine.get(task_id)
            assert final is not None
            assert final.node_identity == "cut"
    finally:
        engine.stop()
    assert cut.alive()
    assert other.alive()
    assert requeued < LEASE + 5  # faults.md#fault-33: within the lease and 5 s
    assert taken_over < LEASE + 15
    assert recovered < 30
