"""The node file a worker node publishes its pool figures in (read by ``taskengine stats``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import taskengine
from taskengine.cli import nodefile
from taskengine.cli import stats as stats_command


def _snapshot() -> taskengine.EngineStats:
    engine = taskengine.TaskEngine()
    try:
        engine.register_handler("alpha", "tests.handlers.basic", "echo", max_worker_count=3)
        return engine.stats()
    finally:
        engine.stop()


def test_written_private_read_back_and_removed(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db.node.json")
    nodefile.write(path, _snapshot())
    assert os.stat(path).st_mode & 0o777 == 0o600
    live = nodefile.read_live(path)
    assert live is not None
    assert live["types"][0]["type"] == "alpha"
    nodefile.remove(path)
    assert not os.path.exists(path)
    assert nodefile.read_live(path) is None


def test_stale_garbage_or_dead_node_files_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "t.db.node.json"
    nodefile.write(str(path), _snapshot())
    later = datetime.now(UTC) + timedelta(seconds=nodefile.MAX_AGE + 1)
    assert nodefile.read_live(str(path), now=later) is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(path.read_text())
    data["pid"] = int(dead.stdout)
    path.write_text(json.dumps(data))
    assert nodefile.read_live(str(path)) is None
    nodefile.remove(str(path))  # written by another pid: left alone
    assert path.exists()
    path.write_text("{not json")
    assert nodefile.read_live(str(path)) is None


def test_node_figures_are_merged_into_the_store_counts() -> None:
    counts = taskengine.EngineStats(
        node_identity="cli",
        date_taken=datetime.now(UTC),
        is_dispatching=False,
        types=(taskengine.TypeStats(task_type="alpha", pending=4),),
    )
    node = {
        "nodeIdentity": "node-1",
        "types": [
            {"type": "alpha", "isRegistered": True, "workersAlive": 2, "workersBusy": 1,
             "maxWorkerCount": 3, "tasksDone": 7, "failures": 1, "crashes": 0,
             "meanRunTime": 0.5},
            {"type": "beta", "isRegistered": True, "workersAlive": 0, "workersBusy": 0,
             "maxWorkerCount": 1, "tasksDone": 0, "failures": 0, "crashes": 0,
             "meanRunTime": None},
        ],
    }  # fmt: skip
    merged = stats_command.with_node(counts, node)
    assert merged.is_dispatching
    assert merged.node_identity == "node-1"
    alpha = merged.of("alpha")
    assert (alpha.pending, alpha.workers_busy, alpha.tasks_done) == (4, 1, 7)
    assert merged.of("beta").max_worker_count == 1
