"""``wait`` sees changes that another process commits (issue 16, defect 3; faults.md#fault-43).

The waiting engine dispatches or not; the change comes from ``taskengine tasks cancel`` or
from a ``taskengine worker`` node, each a real subprocess on the same store.  ``wait`` must
return within the documented bound (a look every ``publishing.WATCH_INTERVAL`` on SQLite,
``WATCH_POLL_MAX`` on PostgreSQL); the assertions allow a generous margin above it for a
loaded machine, far below the timeouts a missed change would run into.  Waits without a
timeout run on a thread joined with a deadline, so a regression fails instead of hanging.
Synchronisation is by the store and marker files, polled with deadlines, never by sleeping.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import taskengine
from taskengine import TaskStatus
from taskengine.coordinator import publishing
from tests.cli.conftest import ROOT, cli_env, run_cli, url
from tests.conftest import until

from .support import Gate

PROBES = "tests.handlers.probes"
APP = "tests.cli.worker_app:setup"
#: How late ``wait`` may return after the other process's change, with room for a loaded host.
MARGIN = 3.0


class Outcome:
    """A ``wait`` run on a thread: its result or exception, and when it returned."""

    def __init__(self, call: Callable[[], taskengine.BackgroundTask]) -> None:
        self.task: taskengine.BackgroundTask | None = None
        self.error: BaseException | None = None
        self.returned_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], taskengine.BackgroundTask]) -> None:
        try:
            self.task = call()
        except BaseException as exc:
            self.error = exc
        self.returned_at = time.monotonic()

    def join(self, timeout: float) -> taskengine.BackgroundTask:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"wait did not return within {timeout}s"
        if self.error is not None:
            raise self.error
        assert self.task is not None
        return self.task


class Store:
    """One store backend for the tests: how to build engines on it and name it to the CLI."""

    def __init__(self, url_: str, env: dict[str, str], make: Callable[[], taskengine.TaskStore]):
        self.url = url_
        self.env = env
        self.make = make

    def engine(self) -> taskengine.TaskEngine:
        return taskengine.TaskEngine(self.make())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--store", self.url, env=self.env)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "tasks.db"
        yield Store(url(path), cli_env(), lambda: taskengine.SqliteStore(path))
        return
    from tests.postgres import support

    with support.fresh_schema() as (dsn, schema):
        yield Store(
            dsn,
            cli_env(TASKENGINE_PG_SCHEMA=schema),
            lambda: taskengine.PostgresStore(dsn, schema=schema),
        )


@pytest.mark.parametrize("timeout", [60.0, None], ids=["timeout", "no-timeout"])
def test_cancel_from_the_command_wakes_a_wait_on_the_dispatching_engine(
    store: Store, make_gate: Callable[[str], Gate], timeout: float | None
) -> None:
    changes: list[taskengine.BackgroundTask] = []
    engine = store.engine().start()
    gate = make_gate("cancelled-elsewhere")
    try:
        engine.register_handler("gated", PROBES, "gated", changes.append)
        task_id = engine.create("gated", gate.payload(), retain_for=None)
        gate.wait_started()
        waiting = Outcome(lambda: engine.wait(task_id, timeout=timeout))
        done = store.cli("tasks", "cancel", "--terminate", task_id)
        assert done.returncode == 0, done.stderr
        cancelled_at = time.monotonic()
        final = waiting.join(timeout=MARGIN + 10)
        assert final.status is TaskStatus.CANCELLED
        assert final.id == task_id
        assert waiting.returned_at is not None
        assert waiting.returned_at - cancelled_at < MARGIN
        # The change was seen here, so this engine's callback hears of it, once.
        until(lambda: any(c.status is TaskStatus.CANCELLED for c in changes))
        assert [c.status for c in changes].count(TaskStatus.CANCELLED) == 1
    finally:
        gate.open()  # the attempt of a cancel from elsewhere is not killed here (reported)
        engine.stop(timeout=10)


def test_cancel_of_a_pending_task_from_the_command_wakes_a_wait_that_has_no_timeout(
    store: Store,
) -> None:
    engine = store.engine().start()
    try:
        task_id = engine.create("nobody-handles-this", retain_for=60)
        waiting = Outcome(lambda: engine.wait(task_id))
        done = store.cli("tasks", "cancel", task_id)
        assert done.returncode == 0, done.stderr
        cancelled_at = time.monotonic()
        assert waiting.join(timeout=MARGIN + 10).status is TaskStatus.CANCELLED
        assert waiting.returned_at is not None
        assert waiting.returned_at - cancelled_at < MARGIN
    finally:
        engine.stop(timeout=10)


def test_remove_from_the_command_ends_a_wait_with_task_not_found(store: Store) -> None:
    engine = store.engine()  # never started: it only creates and waits
    try:
        task_id = engine.create("nobody-handles-this", retain_for=60)
        waiting = Outcome(lambda: engine.wait(task_id, timeout=60))
        assert store.cli("tasks", "remove", task_id).returncode == 0
        with pytest.raises(taskengine.TaskNotFoundError):
            waiting.join(timeout=MARGIN + 10)
    finally:
        engine.stop(timeout=10)


def test_a_finish_of_this_engine_fires_its_callback_once_while_waited_on(store: Store) -> None:
    # The watcher may read this engine's own finish before it is announced: no second callback.
    changes: list[taskengine.BackgroundTask] = []
    engine = store.engine().start()
    try:
        engine.register_handler("echo", "tests.handlers.basic", "echo", changes.append)
        ids = [engine.create("echo", n, retain_for=60) for n in range(20)]
        for task_id in ids:
            assert engine.wait(task_id, timeout=30).status is TaskStatus.SUCCESS
        until(lambda: sum(c.status is TaskStatus.SUCCESS for c in changes) == len(ids))
        assert engine._publisher.flush(10)  # every callback queued so far has run
        assert sum(c.status is TaskStatus.SUCCESS for c in changes) == len(ids)
    finally:
        engine.stop(timeout=10)


# -- the split set-up: a web process that never starts its engine, beside a worker node ------


class Node:
    """``taskengine worker`` on a SQLite file, in its own process."""

    def __init__(self, db: Path, markers: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskengine", "worker", APP, "--store", url(db)],
            cwd=ROOT,
            env=cli_env(CLI_TEST_MARKERS=str(markers)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "tasks.db"
    markers = tmp_path / "node-markers"
    markers.mkdir()
    taskengine.TaskEngine(taskengine.SqliteStore(db)).stop()  # the file, before the node
    node = Node(db, markers)
    try:
        yield db
    finally:
        node.close()


@pytest.mark.parametrize("timeout", [60.0, None], ids=["timeout", "no-timeout"])
def test_a_web_process_waits_for_a_task_the_worker_node_runs(
    node_db: Path, timeout: float | None
) -> None:
    web = taskengine.TaskEngine(taskengine.SqliteStore(node_db))  # never started
    try:
        task_id = web.create("square", 7, retain_for=60)
        waiting = Outcome(lambda: web.wait(task_id, timeout=timeout))
        # The node polls for new work every second and may still be starting.
        final = waiting.join(timeout=90)
        assert final.status is TaskStatus.SUCCESS
        assert final.result == 49
        assert web.get(task_id) == final
    finally:
        web.stop(timeout=10)


def test_the_asyncio_face_waits_for_a_task_the_worker_node_runs(node_db: Path) -> None:
    async def scenario() -> taskengine.BackgroundTask:
        web = taskengine.AsyncTaskEngine(taskengine.TaskEngine(taskengine.SqliteStore(node_db)))
        try:
            task_id = await web.create("square", 8, retain_for=60)
            return await web.wait(task_id, timeout=60)
        finally:
            await web.stop(timeout=10)

    final = asyncio.run(asyncio.wait_for(scenario(), timeout=90))
    assert final.status is TaskStatus.SUCCESS
    assert final.result == 64


def test_the_asyncio_face_sees_a_cancel_from_the_command(store: Store) -> None:
    async def scenario() -> tuple[taskengine.BackgroundTask, float]:
        web = taskengine.AsyncTaskEngine(store.engine())
        try:
            task_id = await web.create("nobody-handles-this", retain_for=60)
            waiting = asyncio.ensure_future(web.wait(task_id))  # no timeout
            done = await asyncio.to_thread(store.cli, "tasks", "cancel", task_id)
            assert done.returncode == 0, done.stderr
            cancelled_at = time.monotonic()
            final = await asyncio.wait_for(waiting, timeout=MARGIN + 10)
            return final, time.monotonic() - cancelled_at
        finally:
            await web.stop(timeout=10)

    final, late = asyncio.run(scenario())
    assert final.status is TaskStatus.CANCELLED
    assert late < MARGIN


def test_the_reference_states_the_watcher_bounds() -> None:
    reference = (ROOT / "docs" / "reference" / "api.md").read_text()
    assert f"{publishing.WATCH_INTERVAL} s" in reference
    assert f"{publishing.WATCH_POLL_MAX} s" in reference
