"""Two nodes under a steady stream of tasks lose every server session at once (faults.md#fault-34).

Two faults, one scenario:

* ``terminate``: every session of the nodes and of the task producer is ended with
  ``pg_terminate_backend`` from a separate admin connection, while the server goes on serving
  everyone else.  (Only this test's sessions, recognised by their ``application_name``: ending
  every session of the database would break the tests other people run on the same server.)
* ``restart``: the whole server restarts (``pg_ctlcluster ... restart``).  That breaks every
  other test using the server at the time, so it runs only under ``CI=true`` (where it must
  work: no skip) or with ``TASKENGINE_TEST_PG_RESTART=1``; it waits for the server to accept
  connections again before it ends, even when it fails.

Each node must reconnect and run new tasks, every task whose creation was acknowledged must
succeed, and the time from the fault to both nodes running new tasks is printed and bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import taskengine
from taskengine.core import errors
from tests.conftest import until
from tests.postgres import support as pg
from tests.postgres.cluster import Node, read_log, start_nodes

pytestmark = pytest.mark.postgres

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RESTART_VARIABLE = "TASKENGINE_TEST_PG_RESTART"
RESTART = pytest.mark.skipif(
    not CI and not os.environ.get(RESTART_VARIABLE),
    reason=f"restarts the shared PostgreSQL server; CI runs it, or set {RESTART_VARIABLE}=1",
)
#: Seconds from the fault until both nodes run new tasks, at most (measured: a few seconds).
RECOVERY_BOUND = 30.0


@pytest.fixture
def schema() -> Iterator[tuple[str, str]]:
    dsn = pg.dsn()
    name = pg.new_schema_name()
    try:
        yield dsn, name
    finally:
        # The server must be back for whatever runs next, whatever happened here.
        until(lambda: accepts_connections(dsn), timeout=60, step=0.2)
        pg.drop_schema(dsn, name)


@pytest.fixture
def nodes_made(schema: tuple[str, str]) -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.stop()


class Producer:
    """Creates one task every 20 ms on a thread; keeps the ids whose creation was acknowledged."""

    def __init__(self, dsn: str, schema: str, log: Path) -> None:
        # Named after the schema, so that the faults end its sessions too.
        store = pg.make_store(dsn, schema, connect_timeout=1)
        self._engine = taskengine.TaskEngine(store)
        self._log = str(log)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._acknowledged: list[tuple[float, str]] = []
        self.refused = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):  # the pace of the stream, not a synchronisation
            try:
                [task_id] = self._engine.create_many(
                    "logged", [{"log": self._log}], retain_for=None, retry_count=None
                )
            except errors.StoreError:
                self.refused += 1
                continue
            with self._lock:
                self._acknowledged.append((time.monotonic(), task_id))

    def acknowledged(self, since: float = 0.0) -> set[str]:
        """Ids acknowledged at or after ``since`` (monotonic)."""
        with self._lock:
            return {task_id for at, task_id in self._acknowledged if at >= since}

    def stop(self) -> None:
        """Stop creating tasks, then stop the engine (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self._engine.stop()


def terminate_sessions(dsn: str, schema: str) -> Callable[[], None]:
    """The ``terminate`` fault: end every session of this test's nodes and producer."""

    def fault() -> None:
        assert pg.terminate_backends(dsn, schema) >= 3  # two nodes and the producer at least

    return fault


def restart_server(dsn: str) -> Callable[[], None]:
    """The ``restart`` fault: restart the cluster that serves ``dsn``'s port."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        pytest.fail("the restart test needs pg_lsclusters and pg_ctlcluster (postgresql-common)")
    port = str(psycopg.conninfo.conninfo_to_dict(dsn).get("port", 5432))
    listed = subprocess.run(
        ["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    found = [line.split()[:2] for line in listed.splitlines() if line.split()[2:3] == [port]]
    if len(found) != 1:
        pytest.fail(f"no single local cluster listens on port {port}: {listed!r}")
    [[version, cluster]] = found

    def fault() -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    return fault


def accepts_connections(dsn: str) -> bool:
    """Whether the server answers a query now."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def statuses(dsn: str, schema: str, ids: set[str]) -> dict[str, str]:
    """Task id -> status, for ``ids``."""
    query = sql.SQL("SELECT id, status FROM {} WHERE id = ANY(%s)").format(
        sql.Identifier(schema, "tasks")
    )
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return dict(conn.execute(query, (list(ids),)).fetchall())


@pytest.mark.parametrize("fault", ["terminate", pytest.param("restart", marks=RESTART)])
def test_two_nodes_recover_from_losing_every_session_under_load(
    fault: str, schema: tuple[str, str], tmp_path: Path, nodes_made: list[Node]
) -> None:
    dsn, name = schema
    inject = terminate_sessions(dsn, name) if fault == "terminate" else restart_server(dsn)
    producer: Producer | None = None
    try:
        taskengine.PostgresStore(dsn, schema=name).open()
        nodes_made += start_nodes(dsn, name, tmp_path, count=2, workers=2, lease=10.0)
        log = tmp_path / "runs.log"
        producer = Producer(dsn, name, log)

        def runs_by_node() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {node.name: set() for node in nodes_made}
            for task_id, lines in read_log(log).items():
                for _, node in lines:
                    found[node].add(task_id)
            return found

        until(lambda: all(len(ran) >= 10 for ran in runs_by_node().values()), timeout=60)
        fault_at = time.monotonic()
        inject()  # a restart returns once the server accepts connections again
        server_back = time.monotonic() - fault_at
        after = time.monotonic()
        # Recovered: each node ran a task whose creation was acknowledged after the fault.
        until(
            lambda: all(ran & producer.acknowledged(after) for ran in runs_by_node().values()),
            timeout=RECOVERY_BOUND + 30,
            step=0.05,
        )
        recovered = time.monotonic() - fault_at
        producer.stop()
        acknowledged = producer.acknowledged()
        until(
            lambda: set(statuses(dsn, name, acknowledged).values()) == {"success"},
            timeout=60,
            step=0.2,
        )
        print(
            f"\n{fault}: server back {server_back:.1f}s after the fault began; both nodes ran "
            f"new tasks {recovered:.1f}s after it; {len(acknowledged)} tasks acknowledged, "
            f"{producer.refused} creations refused meanwhile"
        )
        assert set(read_log(log)) >= acknowledged  # nothing acknowledged was lost
        assert all(node.alive() for node in nodes_made)
        assert recovered < RECOVERY_BOUND
        for node in nodes_made:
            assert node.stop() == 0, node.stderr_path.read_text()[-3000:]
    finally:
        if producer is not None:
            producer.stop()
