"""Engine nodes as real processes on one PostgreSQL schema (for tests and the benchmark)."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.conftest import until

DRIVER = Path(__file__).with_name("node_driver.py")
ROOT = Path(__file__).resolve().parents[2]


class Node:
    """One ``node_driver.py`` process, leading its own process group."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        name: str,
        workdir: Path,
        workers: int,
        lease: float,
        *,
        own_session: bool = True,
        types: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.ready = workdir / f"{name}.ready"
        self.stderr_path = workdir / f"{name}.stderr"
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(DRIVER),
                    dsn,
                    schema,
                    name,
                    str(workers),
                    str(lease),
                    str(self.ready),
                    *([",".join(types)] if types else []),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # Its own session is its own process group, which the tests SIGKILL whole.
                start_new_session=own_session,
            )

    def is_ready(self) -> bool:
        assert self.proc.poll() is None, self.stderr_path.read_text()
        return self.ready.exists()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the node and its workers (its whole process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM (graceful stop); SIGKILL the group if it takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of a killed node
        return self.proc.returncode


def start_nodes(
    dsn: str,
    schema: str,
    workdir: Path,
    count: int,
    workers: int,
    lease: float,
    *,
    own_session: bool = True,
    types: tuple[str, ...] = (),
) -> list[Node]:
    """``count`` nodes, returned once every one is dispatching.

    ``own_session=False`` keeps the nodes in the caller's session: with the kernel's
    autogroup scheduling every session gets an equal CPU share, so a benchmark comparing one
    node with three must not give the three nodes three shares.
    """
    nodes = [
        Node(dsn, schema, f"node{k}", workdir, workers, lease, own_session=own_session, types=types)
        for k in range(count)
    ]
    for node in nodes:
        until(node.is_ready, timeout=90)
    return nodes


def status_counts(dsn: str, schema: str) -> dict[str, int]:
    """How many tasks the schema holds per status."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            psycopg.sql.SQL("SELECT status, count(*) FROM {} GROUP BY status").format(
                psycopg.sql.Identifier(schema, "tasks")
            )
        ).fetchall()
    return dict(rows)


def read_log(path: Path) -> dict[str, list[tuple[int, str]]]:
    """Task id -> [(attempt, node), ...] in log order."""
    runs: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            task_id, attempt, node = line.split()
            runs[task_id].append((int(attempt), node))
    return runs
