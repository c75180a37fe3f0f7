"""One SQLite file has one dispatching engine (FAULTS 26); readers are never refused."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskengine


def test_a_second_engine_on_the_same_file_is_refused_and_can_start_after(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    first = taskengine.TaskEngine(taskengine.SqliteStore(path), node_identity="first-node")
    first.start()
    try:
        second = taskengine.TaskEngine(taskengine.SqliteStore(path), node_identity="second-node")
        with pytest.raises(taskengine.StoreError, match="first-node"):
            second.start()
        # A refused engine can still read and create: only dispatching is exclusive.
        task_id = second.create("report", {"n": 1}, retain_for=None)
        assert first.get(task_id) is not None
        assert second.query(task_type="report").entities[0].id == task_id
        second.stop(timeout=1)
    finally:
        first.stop(timeout=5)
    third = taskengine.TaskEngine(taskengine.SqliteStore(path))
    third.start()
    assert third.get(task_id) is not None
    third.stop(timeout=5)
