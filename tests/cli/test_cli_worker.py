"""``taskengine worker`` end to end: a node in one process, ``tasks``/``stats`` from others.

Real processes throughout; synchronisation is by marker files and the store, polled with
deadlines (``until``), never by sleeping.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import taskengine

from ..conftest import until
from .conftest import ROOT, cli_env, engine_on, run_cli, url

APP = "tests.cli.worker_app:setup"


class Node:
    def __init__(self, db: Path, markers: Path, *extra: str) -> None:
        self.db = db
        self.markers = markers
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskengine", "worker", APP, "--store", url(db), *extra],
            cwd=ROOT,
            env=cli_env(CLI_TEST_MARKERS=str(markers)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def started_pids(self) -> list[int]:
        return [int(p.read_text()) for p in self.markers.glob("started-*")]

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def node(db: Path, markers: Path) -> Iterator[Node]:
    engine_on(db).stop()  # create the file before the readers look at it
    running = Node(db, markers)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
    for stream in (running.proc.stdout, running.proc.stderr):
        if stream is not None:
            stream.close()
    running.proc.wait(timeout=30)


def _status(db: Path, task_id: str) -> taskengine.TaskStatus | None:
    engine = engine_on(db)
    try:
        task = engine.get(task_id)
    finally:
        engine.stop()
    return None if task is None else task.status


def test_worker_runs_tasks_while_other_processes_list_and_count_them(db: Path, node: Node) -> None:
    engine = engine_on(db)
    try:
        squares = engine.create_many("square", list(range(6)), retain_for=None)
        gate = node.markers / "gate"
        slow = engine.create("sleep", {"gate": str(gate)}, retain_for=None)
    finally:
        engine.stop()
    until(lambda: node.started_pids(), timeout=60)  # the slow attempt is running
    until(lambda: all(_status(db, t) == "success" for t in squares), timeout=60)

    listing = run_cli("tasks", "list", "--store", url(db), "--json", "--all")
    assert listing.returncode == 0, listing.stderr
    rows = {t["id"]: t for t in json.loads(listing.stdout)["entities"]}
    assert {rows[t]["result"] for t in squares} == {n * n for n in range(6)}
    assert rows[slow]["status"] == "processing"
    assert rows[slow]["nodeIdentity"] is not None

    stats = run_cli("stats", "--store", url(db), "--json")
    assert stats.returncode == 0, stats.stderr
    by_type = {e["type"]: e for e in json.loads(stats.stdout)["types"]}
    assert by_type["square"]["success"] == 6
    assert by_type["sleep"]["processing"] == 1

    # The node publishes its pools' figures (node file): the busy sleep worker shows up.
    def node_figures() -> dict[str, dict[str, object]] | None:
        done = run_cli("stats", "--store", url(db), "--json")
        data = json.loads(done.stdout)
        types = {e["type"]: e for e in data["types"]}
        busy = data["workersFrom"] is not None and types["sleep"]["workersBusy"] == 1
        return types if busy else None

    figures = until(node_figures, timeout=30, step=0.2)
    assert figures["square"]["tasksDone"] == 6
    assert figures["square"]["maxWorkerCount"] == 2
    assert figures["sleep"]["workersAlive"] == 1
    table = run_cli("stats", "--store", url(db))
    assert "workers: node " in table.stdout
    assert "busy" in table.stdout
    assert Path(f"{db}.node.json").exists()

    # SIGTERM: the running attempt may finish, the worker runs its shutdown method, exit 0.
    node.proc.send_signal(signal.SIGTERM)
    until(lambda: "SIGTERM: stopping" in _read_some(node), timeout=30)
    assert node.proc.poll() is None  # still waiting for the running attempt
    before = _read_some(node)
    gate.write_text("open")
    code, rest = node.finish()
    err = before + rest
    assert code == 0, err
    assert "taskengine worker: stopped" in err
    assert _status(db, slow) == "success"
    assert list(node.markers.glob("shutdown-*"))
    assert not Path(f"{db}.node.json").exists()  # a stopped node publishes nothing
    after = json.loads(run_cli("stats", "--store", url(db), "--json").stdout)
    assert after["workersFrom"] is None


def test_a_second_signal_kills_the_workers_at_once(db: Path, node: Node) -> None:
    engine = engine_on(db)
    try:
        slow = engine.create("sleep", {"seconds": 600}, retain_for=None)
    finally:
        engine.stop()
    [worker_pid] = until(lambda: node.started_pids(), timeout=60)
    node.proc.send_signal(signal.SIGINT)
    until(lambda: "stopping" in _read_some(node), timeout=30)
    node.proc.send_signal(signal.SIGTERM)
    code, err = node.finish(timeout=30)
    assert code == 1
    assert "second signal" in err
    until(lambda: not psutil.pid_exists(worker_pid) or _is_zombie(worker_pid), timeout=10)
    # Cut short: still processing (the next node re-queues it), or already re-queued when the
    # reactor saw its worker die before the process exited.
    assert _status(db, slow) in ("processing", "pending")
    recovering = taskengine.TaskEngine(taskengine.SqliteStore(db)).start()
    try:
        task = recovering.get(slow)
        assert task is not None
        assert task.status is taskengine.TaskStatus.PENDING
        assert task.error is not None
        assert task.error.type == "WorkerCrashedError"
    finally:
        recovering.stop()


_seen: dict[int, str] = {}


def _read_some(node: Node) -> str:
    """Stderr of a running node so far (the node prints one line per state change)."""
    assert node.proc.stderr is not None
    import os
    import select

    fd = node.proc.stderr.fileno()
    text = _seen.get(node.proc.pid, "")
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        text += chunk.decode()
    _seen[node.proc.pid] = text
    return text


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_second_dispatching_node_on_the_same_file_is_refused(
    db: Path, node: Node, markers: Path
) -> None:
    engine = engine_on(db)
    try:
        engine.create("sleep", {"seconds": 600}, retain_for=None)
    finally:
        engine.stop()
    until(lambda: node.started_pids(), timeout=60)  # the first node holds the lock
    second = run_cli("worker", APP, "--store", url(db), env=cli_env(CLI_TEST_MARKERS=str(markers)))
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("taskengine: ")


def test_a_failing_app_is_one_line_and_exit_1(db: Path, markers: Path) -> None:
    done = run_cli(
        "worker", "tests.cli.worker_app:broken_setup", "--store", url(db),
        env=cli_env(CLI_TEST_MARKERS=str(markers)),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "taskengine: tests.cli.worker_app:broken_setup failed: RuntimeError: this setup "
        "always fails"
    )
    missing = run_cli("worker", "tests.cli.nowhere:setup", "--store", url(db))
    assert missing.returncode == 1
    assert "cannot import 'tests.cli.nowhere'" in missing.stderr
