"""One SQLite file has one dispatching engine, whatever its name; readers are never refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import taskengine

ROOT = Path(__file__).resolve().parents[2]


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


def other_names(path: Path) -> dict[str, Path]:
    """Names that reach the file ``path`` without being its path."""
    symlink = path.with_name("via-symlink.db")
    symlink.symlink_to(path)
    hard_link = path.with_name("via-hard-link.db")
    os.link(path, hard_link)
    linked_dir = path.parent.with_name(path.parent.name + "-link")
    linked_dir.symlink_to(path.parent, target_is_directory=True)
    return {
        "symlink": symlink,
        "hard link": hard_link,
        "symlinked directory": linked_dir / path.name,
        "doubled slashes": Path("//" + str(path).lstrip("/")),
        "dot-dot": path.parent / ".." / path.parent.name / "." / path.name,
    }


def test_a_second_engine_through_another_name_of_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tasks.db"
    path.parent.mkdir()
    first = taskengine.TaskEngine(taskengine.SqliteStore(path), node_identity="first-node")
    first.start()
    try:
        # Every name is made after the first engine took the lock.
        for how, name in other_names(path).items():
            assert os.path.samefile(name, path), how
            if how == "hard link":
                # In one process SQLite itself refuses a second name of an open file (its -wal
                # and -shm are named after the name); another process is checked below.
                with pytest.raises(taskengine.StoreError, match="cannot open"):
                    taskengine.TaskEngine(taskengine.SqliteStore(name))
                continue
            second = taskengine.TaskEngine(taskengine.SqliteStore(name), node_identity="second")
            with pytest.raises(taskengine.StoreError, match="first-node"):
                second.start()
            second.stop(timeout=1)
    finally:
        first.stop(timeout=5)
    for name in (path.with_name("via-symlink.db"), path.with_name("via-hard-link.db")):
        # Once the first engine stopped, any name may dispatch, one at a time.
        engine = taskengine.TaskEngine(taskengine.SqliteStore(name))
        engine.start()
        engine.stop(timeout=5)


def test_the_holder_is_named_through_a_symlink(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    taskengine.SqliteStore(path).open()
    link = tmp_path / "link.db"
    link.symlink_to(path)
    first = taskengine.TaskEngine(taskengine.SqliteStore(link), node_identity="first-node")
    first.start()
    try:
        second = taskengine.TaskEngine(taskengine.SqliteStore(path), node_identity="second")
        with pytest.raises(taskengine.StoreError, match="first-node"):
            second.start()
        second.stop(timeout=1)
    finally:
        first.stop(timeout=5)
    # The lock file sits beside the real file, whatever name took it.
    assert (tmp_path / "tasks.db.lock").exists()
    assert not (tmp_path / "link.db.lock").exists()


_OTHER_PROCESS = """
import sys, taskengine
engine = taskengine.TaskEngine(taskengine.SqliteStore(sys.argv[1]), node_identity="other")
try:
    engine.start()
except taskengine.StoreError as exc:
    print("refused:", exc)
else:
    print("started")
engine.stop(timeout=5)
"""


@pytest.mark.parametrize("how", ["symlink", "hard link", "doubled slashes"])
def test_an_engine_in_another_process_is_refused_through_another_name(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "data" / "tasks.db"
    path.parent.mkdir()
    first = taskengine.TaskEngine(taskengine.SqliteStore(path), node_identity="first-node")
    first.start()
    try:
        name = other_names(path)[how]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
        done = subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS, str(name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.startswith("refused:"), done.stdout + done.stderr
        assert "already used by another running engine" in done.stdout
        if how != "hard link":  # a hard link reaches the file, not its lock file
            assert "first-node" in done.stdout
    finally:
        first.stop(timeout=5)
