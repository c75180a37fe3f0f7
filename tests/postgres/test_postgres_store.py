"""PostgresStore on its own and with engines in this process: schema, driver, leases, NOTIFY."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql

import taskengine
from taskengine.core import errors, transitions
from taskengine.stores import base
from tests.conftest import until
from tests.contract.factories import at, claimer, new
from tests.postgres import support as pg

pytestmark = pytest.mark.postgres

Status = taskengine.TaskStatus
HANDLERS = "tests.postgres.node_handlers"


def execute(dsn: str, query: sql.Composable, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query, params)


# -- construction, schema, driver -----------------------------------------------------------


def test_the_store_is_shared_durable_and_names_its_dsn_and_schema(
    schema: tuple[str, str],
) -> None:
    dsn, name = schema
    store = pg.make_store(dsn, name)
    assert store.capabilities == base.StoreCapabilities(durable=True, shared=True)
    assert isinstance(store, base.SharedTaskStore)
    assert (store.dsn, store.schema) == (dsn, name)
    assert store.heartbeat_interval == pytest.approx(store.lease_timeout / 3)
    store.open()
    store.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("schema", 'x"; DROP SCHEMA public; --'),
        ("schema", ""),
        ("schema", "1abc"),
        ("lease_timeout", 0),
        ("lease_timeout", 0.05),
        ("lease_timeout", 5e-324),
        ("heartbeat_interval", 0.001),
        ("lease_timeout", float("nan")),
        ("lease_timeout", True),
        ("heartbeat_interval", 30.0),
        ("connect_timeout", -1),
    ],
)
def test_bad_options_are_validation_errors_naming_them(option: str, value: object) -> None:
    with pytest.raises(errors.TaskValidationError, match=option):
        taskengine.PostgresStore("postgresql://localhost/x", **{option: value})  # type: ignore[arg-type]


def test_a_newer_schema_version_is_refused_clearly(schema: tuple[str, str]) -> None:
    dsn, name = schema
    pg.make_store(dsn, name).open()
    execute(
        dsn, sql.SQL("UPDATE {} SET version = 99").format(sql.Identifier(name, "schema_version"))
    )
    with pytest.raises(errors.SchemaVersionError, match="version 99"):
        pg.make_store(dsn, name).open()


def test_a_schema_with_a_foreign_tasks_table_is_refused(schema: tuple[str, str]) -> None:
    dsn, name = schema
    execute(dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    execute(dsn, sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(name, "tasks")))
    with pytest.raises(errors.StoreError, match="not a taskengine schema"):
        pg.make_store(dsn, name).open()


def test_other_tables_in_the_schema_are_left_alone(schema: tuple[str, str]) -> None:
    dsn, name = schema
    execute(dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    execute(dsn, sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(name, "schedules")))
    store = pg.make_store(dsn, name)
    store.open()
    task = new()
    assert store.insert_many([task]) == [task.id]
    store.close()


def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    store = taskengine.PostgresStore(
        "postgresql://someone:s3cret-pw@127.0.0.1:1/nothing", connect_timeout=1
    )
    with pytest.raises(errors.StoreError) as caught:
        taskengine.TaskEngine(store)
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(store)


def test_import_taskengine_never_imports_psycopg_and_a_missing_driver_names_the_extra() -> None:
    code = (
        "import sys; import taskengine; assert 'psycopg' not in sys.modules\n"
        "taskengine.PostgresStore; assert 'psycopg' not in sys.modules\n"
        "sys.modules['psycopg'] = None\n"
        "try:\n"
        "    taskengine.PostgresStore('postgresql://localhost/x')\n"
        "except taskengine.StoreError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "taskengine[postgres]" in done.stdout


# -- leases ---------------------------------------------------------------------------------


def test_an_expired_lease_is_requeued_as_a_crash_and_the_late_write_is_fenced(
    schema: tuple[str, str], make_engine: Callable[..., taskengine.TaskEngine]
) -> None:
    dsn, name = schema
    dead = pg.make_store(dsn, name, lease_timeout=1.0)
    dead.open()
    task = new(retry_count=0, retain_for=None, run_at=at(0))
    dead.insert_many([task])
    [claimed] = dead.claim_due("alpha", at(0), 1, claimer(at(0), "dead-node"))
    engine = make_engine(store_options={"lease_timeout": 1.0})

    def requeued() -> taskengine.BackgroundTask | None:
        found = engine.get(task.id)
        return found if found is not None and found.status is Status.FAILED else None

    failed = until(requeued, timeout=20)
    assert failed.attempts == 1
    assert failed.error is not None
    assert failed.error.type == "WorkerCrashedError"
    assert "dead-node" in failed.error.message
    late = transitions.succeed(claimed, b"late", at(5))
    fenced = base.Update(task=late, expected_status=Status.PROCESSING, expected_attempts=1)
    assert dead.apply([fenced]) == [False]
    assert engine.get(task.id) == failed
    dead.close()


def test_a_live_node_keeps_its_claims_past_the_lease_timeout(
    make_engine: Callable[..., taskengine.TaskEngine], tmp_path: Path
) -> None:
    # A node would have to stall for over 1.3 s (lease minus heartbeat) to lose the claim.
    options = {"store_options": {"lease_timeout": 2.0}}
    runner = make_engine(**options)
    watcher = make_engine(**options)  # would re-queue the task if the lease lapsed
    runner.register_handler("logged", HANDLERS, "logged")
    log = tmp_path / "runs.log"
    task_id = watcher.create("logged", {"log": str(log), "seconds": 5.0}, retain_for=None)
    done = runner.wait(task_id, timeout=60)
    assert done.status is Status.SUCCESS
    assert done.attempts == 1
    assert len(log.read_text().splitlines()) == 1


# -- notifications --------------------------------------------------------------------------


def test_an_insert_on_one_store_wakes_the_listener_of_another(schema: tuple[str, str]) -> None:
    dsn, name = schema
    listening, other = pg.make_store(dsn, name), pg.make_store(dsn, name)
    listening.open()
    woken = threading.Event()
    listening.listen("node-a", woken.set, lambda task_id: None)
    try:
        assert woken.wait(10)  # the catch-up wakeup after connecting
        woken.clear()
        task = new()
        other.insert_many([task])  # one statement: the insert and its NOTIFY
        assert woken.wait(10)
        assert listening.get(task.id) == task
    finally:
        listening.close()
        other.close()


def test_a_termination_request_reaches_only_the_named_node(schema: tuple[str, str]) -> None:
    dsn, name = schema
    stores = [pg.make_store(dsn, name) for _ in range(3)]
    got: dict[str, list[str]] = {"a": [], "b": []}
    ready = [threading.Event(), threading.Event()]
    for store, node, event in zip(stores, ("a", "b"), ready, strict=False):
        store.open()
        store.listen(node, event.set, got[node].append)
    try:
        assert all(event.wait(10) for event in ready)
        stores[2].request_termination("b", "0" * 32)
        until(lambda: got["b"])
        assert got == {"a": [], "b": ["0" * 32]}
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("started", [True, False], ids=["node", "never-started"])
def test_cancel_with_terminate_kills_the_attempt_on_another_node(
    make_engine: Callable[..., taskengine.TaskEngine],
    schema: tuple[str, str],
    tmp_path: Path,
    started: bool,
) -> None:
    owner = make_engine()
    # A never-started engine is what the command line uses for "tasks cancel --terminate".
    other = make_engine() if started else taskengine.TaskEngine(pg.make_store(*schema))
    owner.register_handler("hang", HANDLERS, "hang_with_pid")
    pid_file = tmp_path / "worker.pid"
    task_id = other.create("hang", {"pid_file": str(pid_file)}, retain_for=None)
    pid = int(until(lambda: pid_file.exists() and pid_file.read_text()))
    assert other.cancel(task_id, terminate=True) is True
    until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")
    final = other.wait(task_id, timeout=10)
    assert final.status is Status.CANCELLED
    assert final.attempts == 1
    assert owner.get(task_id) == final
    if not started:
        other.stop()


def test_the_engine_recovers_after_its_connections_are_cut(
    make_engine: Callable[..., taskengine.TaskEngine], schema: tuple[str, str], tmp_path: Path
) -> None:
    engine = make_engine()
    engine.register_handler("logged", HANDLERS, "logged")
    log = str(tmp_path / "runs.log")
    assert engine.wait(engine.create("logged", {"log": log}), timeout=30).status is Status.SUCCESS
    assert pg.terminate_backends(schema[0], schema[1]) >= 1
    ids = [engine.create("logged", {"log": log}, retain_for=None) for _ in range(5)]
    for task_id in ids:
        assert engine.wait(task_id, timeout=30).status is Status.SUCCESS


def test_an_attempt_whose_claim_was_taken_away_is_terminated_without_notify(
    make_engine: Callable[..., taskengine.TaskEngine], schema: tuple[str, str], tmp_path: Path
) -> None:
    """The heartbeat notices a claim that is gone (here: a lost NOTIFY) and kills the attempt."""
    owner = make_engine(store_options={"lease_timeout": 1.5})
    owner.register_handler("hang", HANDLERS, "hang_with_pid")
    pid_file = tmp_path / "worker.pid"
    task_id = owner.create("hang", {"pid_file": str(pid_file)}, retain_for=None)
    pid = int(until(lambda: pid_file.exists() and pid_file.read_text()))
    # Another node cancels the task by writing the store only (no termination request).
    outsider = pg.make_store(*schema)
    running = outsider.get(task_id)
    assert running is not None
    cancelled = transitions.cancel(running, running.date_modified, terminate=True)
    fenced = base.Update(task=cancelled, expected_status=Status.PROCESSING, expected_attempts=1)
    assert outsider.apply([fenced]) == [True]
    outsider.close()
    until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")
    assert owner.get(task_id) == cancelled


def test_wait_get_and_query_see_a_task_another_node_runs(
    make_engine: Callable[..., taskengine.TaskEngine], tmp_path: Path
) -> None:
    runner, creator = make_engine(), make_engine()
    runner.register_handler("logged", HANDLERS, "logged")
    task_id = creator.create("logged", {"log": str(tmp_path / "runs.log")}, retain_for=None)
    final = creator.wait(task_id, timeout=30)
    assert final.status is Status.SUCCESS
    assert final.node_identity == runner.node_identity
    assert creator.get(task_id) == final
    assert [t.id for t in creator.query(status="success").entities] == [task_id]
    assert creator.remove(task_id) is True
    assert runner.get(task_id) is None


# -- claims ---------------------------------------------------------------------------------


def test_ten_nodes_racing_for_one_task_claim_it_once_each_round(schema: tuple[str, str]) -> None:
    """faults.md#fault-32: 1 task x 10 stores (own connections) x 100 barrier-started rounds."""
    stores = [pg.make_store(*schema) for _ in range(10)]
    for store in stores:
        store.open()
    rounds = 100
    barrier = threading.Barrier(len(stores))
    won: list[list[str]] = [[] for _ in stores]
    failures: list[BaseException] = []
    tasks = [new(run_at=at(0)) for _ in range(rounds)]

    def race(k: int) -> None:
        try:
            for task in tasks:
                if k == 0:
                    stores[0].insert_many([task])  # one fresh due task per round
                barrier.wait(timeout=60)
                got = stores[k].claim_due("alpha", at(1), 1, claimer(at(1), f"node{k}"))
                won[k].extend(task.id for task in got)
                barrier.wait(timeout=60)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(k,)) for k in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for store in stores:
        store.close()
    assert failures == []
    claimed = [task_id for ids in won for task_id in ids]
    # Every round exactly one store won its task; nobody claimed anything twice.
    assert sorted(claimed) == sorted(task.id for task in tasks)


class DeafStore(taskengine.PostgresStore):
    """A store whose node never hears NOTIFY (a listener lost behind a pooler)."""

    def listen(
        self,
        node_identity: str,
        on_wakeup: Callable[[], None],
        on_terminate: Callable[[str], None],
    ) -> None:
        pass


def test_without_notify_the_poll_still_finds_tasks_created_elsewhere(
    schema: tuple[str, str], make_engine: Callable[..., taskengine.TaskEngine], tmp_path: Path
) -> None:
    """faults.md#fault-35: turning NOTIFY off changes latency only, never correctness."""
    deaf = taskengine.TaskEngine(DeafStore(schema[0], schema=schema[1])).start()
    try:
        deaf.register_handler("logged", HANDLERS, "logged")
        creator = make_engine()
        log = str(tmp_path / "runs.log")
        ids = [creator.create("logged", {"log": log}, retain_for=None) for _ in range(3)]
        for task_id in ids:
            final = creator.wait(task_id, timeout=30)
            assert final.status is Status.SUCCESS
            assert final.node_identity == deaf.node_identity
    finally:
        deaf.stop(timeout=10)


def test_count_tasks_agrees_with_the_memory_store(schema: tuple[str, str]) -> None:
    from tests.contract.factories import drive

    tasks = [
        drive(new(task_type, retain_for=5.0), status, at(1))
        for task_type in ("a", "b")
        for status in Status
    ]
    tasks += [new("a", run_at=at(k)) for k in range(3)]
    memory, postgres = taskengine.MemoryStore(), pg.make_store(*schema)
    postgres.open()
    try:
        for store in (memory, postgres):
            store.insert_many(tasks)
        for moment in (at(0), at(6_000)):  # before and after the finished tasks' retention
            expected = sorted(memory.count_tasks(moment), key=lambda c: (c.task_type, c.status))
            got = sorted(postgres.count_tasks(moment), key=lambda c: (c.task_type, c.status))
            assert got == expected
            assert got
    finally:
        postgres.close()
