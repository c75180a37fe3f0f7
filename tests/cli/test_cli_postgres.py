"""The command on a PostgreSQL store: two ``taskengine worker`` nodes share one task table while
``tasks`` and ``stats`` read it from other processes, and ``tasks retry`` acts on it.

Real processes and a real server (``TASKENGINE_TEST_POSTGRES_DSN``; skipped with the reason
without it, failed under ``CI=true``); each test has its own schema (``TASKENGINE_PG_SCHEMA``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskengine

from ..conftest import until
from .conftest import ROOT, cli_env, run_cli

pytestmark = pytest.mark.postgres

APP = "tests.cli.worker_app:setup"


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    from tests.postgres import support

    with support.fresh_schema() as (dsn, schema):
        yield dsn, schema


def _engine(dsn: str, schema: str) -> taskengine.TaskEngine:
    return taskengine.TaskEngine(taskengine.PostgresStore(dsn, schema=schema))


def test_two_worker_nodes_share_the_table_and_other_commands_see_it(
    pg: tuple[str, str], tmp_path: Path
) -> None:
    dsn, schema = pg
    markers = tmp_path / "markers"
    markers.mkdir()
    env = cli_env(CLI_TEST_MARKERS=str(markers), TASKENGINE_PG_SCHEMA=schema)
    producer = _engine(dsn, schema)  # never started: it only creates and reads
    try:
        squares = producer.create_many("square", list(range(40)), retain_for=None)
        failing = producer.create("fail", "once", retry_count=0, retain_for=None)
        nodes = [
            subprocess.Popen(
                [sys.executable, "-m", "taskengine", "worker", APP, "--store", dsn],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:

            def settled() -> bool:
                tasks = [producer.get(t) for t in [*squares, failing]]
                return all(t is not None and t.status.is_final for t in tasks)

            until(settled, timeout=90, step=0.1)
            listing = run_cli("tasks", "list", "--store", dsn, "--json", "--all", env=env)
            assert listing.returncode == 0, listing.stderr
            rows = {t["id"]: t for t in json.loads(listing.stdout)["entities"]}
            assert {rows[t]["result"] for t in squares} == {n * n for n in range(40)}
            assert rows[failing]["status"] == "failed"

            stats = run_cli("stats", "--store", dsn, "--json", env=env)
            assert stats.returncode == 0, stats.stderr
            by_type = {e["type"]: e for e in json.loads(stats.stdout)["types"]}
            assert by_type["square"]["success"] == 40
            assert by_type["fail"]["failed"] == 1

            # Both nodes publish their pools' figures in the node table; stats adds them up.
            def both_nodes_figures() -> dict[str, dict[str, object]] | None:
                done = run_cli("stats", "--store", dsn, "--json", env=env)
                data = json.loads(done.stdout)
                types = {e["type"]: e for e in data["types"]}
                complete = (
                    data["workersFrom"] is not None
                    and data["nodeIdentity"].count(",") == 1
                    and types["square"]["tasksDone"] == 40
                )
                return types if complete else None

            figures = until(both_nodes_figures, timeout=30, step=0.3)
            assert figures["square"]["maxWorkerCount"] == 4  # two nodes of two workers
            assert figures["fail"]["failures"] == 1

            # retry from the command line: a node picks the revived task up and it fails again.
            retried = run_cli("tasks", "retry", failing, "--store", dsn, env=env)
            assert retried.returncode == 0, retried.stderr
            until(lambda: (t := producer.get(failing)) is not None and t.attempts == 2, 60)
            until(lambda: producer.get(failing).status is taskengine.TaskStatus.FAILED, 60)
        finally:
            for node in nodes:
                node.send_signal(signal.SIGTERM)
            for node in nodes:
                _, err = node.communicate(timeout=60)
                assert node.returncode == 0, err
                assert "taskengine worker: stopped" in err
        after = json.loads(run_cli("stats", "--store", dsn, "--json", env=env).stdout)
        assert after["workersFrom"] is None  # stopped nodes removed their rows
    finally:
        producer.stop()


def test_the_schema_variable_selects_the_schema(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    producer = _engine(dsn, schema)
    try:
        task_id = producer.create("square", 3, retain_for=None)
    finally:
        producer.stop()
    mine = run_cli(
        "tasks", "show", task_id, "--store", dsn, "--json", env=cli_env(TASKENGINE_PG_SCHEMA=schema)
    )
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["id"] == task_id
    bad = run_cli("tasks", "list", "--store", dsn, env=cli_env(TASKENGINE_PG_SCHEMA="1-bad"))
    assert bad.returncode == 1
    assert "schema" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
