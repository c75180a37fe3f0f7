"""The ScheduleStore contract on every backend, durability across restarts, the SQLite upgrade."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from taskengine import MemoryStore, ScheduledTaskTime, SqliteStore, TaskEngine, TaskScheduler
from taskengine.core.clock import FakeClock
from taskengine.scheduler.targets import for_target
from taskengine.stores.memory.schedules import MemoryScheduleStore
from taskengine.stores.schedules import ScheduleRecord, ScheduleStore
from taskengine.stores.sqlite import schema
from taskengine.stores.sqlite.schedules import SqliteScheduleStore

from ..conftest import until
from .conftest import START


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def schedule_store(request, tmp_path: Path) -> Iterator[ScheduleStore]:
    if request.param == "memory":
        store: ScheduleStore = MemoryScheduleStore()
    elif request.param == "sqlite":
        store = SqliteScheduleStore(tmp_path / "tasks.db")
    else:
        from taskengine.stores.postgres.schedules import PgScheduleStore

        dsn, name = request.getfixturevalue("pg_schema")
        store = PgScheduleStore(dsn, name)
    store.open()
    yield store
    store.close()


def rec(slots, key="k", schedule_id="s") -> ScheduleRecord:
    return ScheduleRecord(schedule_id=schedule_id, times_key=key, slots=tuple(slots))


def at(seconds: float):
    return START + timedelta(seconds=seconds)


def test_insert_or_get_keeps_the_first(schedule_store):
    first = rec([at(1), None])
    assert schedule_store.get("s") is None
    assert schedule_store.insert_or_get(first) == first
    assert schedule_store.insert_or_get(rec([at(2), at(3)], key="other")) == first
    assert schedule_store.get("s") == first
    assert first.next_trigger == at(1)


def test_replace_overwrites(schedule_store):
    schedule_store.insert_or_get(rec([at(1)]))
    schedule_store.replace(rec([at(5)], key="k2"))
    assert schedule_store.get("s") == rec([at(5)], key="k2")
    schedule_store.replace(rec([None], schedule_id="new"))
    assert schedule_store.get("new") == rec([None], schedule_id="new")


def test_compare_and_set_needs_the_expected_slot_and_times(schedule_store):
    base = schedule_store.insert_or_get(rec([at(1), at(4)]))
    moved = rec([at(2), at(4)])
    assert schedule_store.compare_and_set(base, moved) is True
    assert schedule_store.compare_and_set(base, rec([at(3), at(4)])) is False  # slot consumed
    assert schedule_store.get("s") == moved
    assert schedule_store.compare_and_set(rec([at(2), at(4)], key="x"), moved) is False
    assert schedule_store.compare_and_set(rec([None]), rec([at(9)])) is False
    assert schedule_store.compare_and_set(rec([at(1)], schedule_id="absent"), moved) is False
    finished = rec([None, None])
    assert schedule_store.compare_and_set(moved, finished) is True
    assert schedule_store.get("s") == finished
    assert finished.next_trigger is None


def test_delete(schedule_store):
    schedule_store.insert_or_get(rec([at(1)]))
    assert schedule_store.delete("s") is True
    assert schedule_store.delete("s") is False
    assert schedule_store.get("s") is None


def test_concurrent_compare_and_set_has_one_winner(schedule_store, request):
    """Eight threads race for each of 20 slots: exactly one wins each."""
    if isinstance(schedule_store, SqliteScheduleStore):
        # Separate connections, as separate processes would have.
        stores = [SqliteScheduleStore(schedule_store._path) for _ in range(8)]
    elif isinstance(schedule_store, MemoryScheduleStore):
        stores = [schedule_store] * 8
    else:
        from taskengine.stores.postgres.schedules import PgScheduleStore

        stores = [PgScheduleStore(schedule_store._dsn, schedule_store.schema) for _ in range(8)]
    schedule_store.insert_or_get(rec([at(0)]))
    wins = [0] * 20
    barrier = threading.Barrier(8)

    def racer(store):
        for slot in range(20):
            barrier.wait(30)
            if store.compare_and_set(rec([at(slot)]), rec([at(slot + 1)])):
                wins[slot] += 1

    threads = [threading.Thread(target=racer, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for store in stores:
        if store is not schedule_store:
            store.close()
    assert wins == [1] * 20


def test_now_is_none_or_the_database_time(schedule_store):
    import datetime as dt

    value = schedule_store.now()
    if isinstance(schedule_store, MemoryScheduleStore | SqliteScheduleStore):
        assert value is None
    else:
        assert value is not None
        assert abs(value - dt.datetime.now(dt.UTC)) < timedelta(seconds=60)


def test_durable_restart_neither_skips_nor_repeats(tmp_path: Path):
    """A scheduler on SQLite is stopped; slots pass; a new one re-adds the schedule by id."""
    clock = FakeClock(START)
    path = tmp_path / "tasks.db"
    fired = []
    times = ScheduledTaskTime(interval_seconds=10)
    with TaskScheduler(SqliteStore(path), clock=clock) as first:
        first.add_task("job", times, fired.append)
        for _ in range(2):
            clock.advance(10)
            first.wait_idle()
    assert fired == [at(10), at(20)]
    # Restarted before the next slot: it continues from the stored slot at 30.
    clock.advance(5)
    with TaskScheduler(SqliteStore(path), clock=clock) as second:
        second.add_task("job", times, fired.append)
        assert second.tasks_info().next_triggers["job"] == at(30)
        clock.advance(5)
        second.wait_idle()
    assert fired == [at(10), at(20), at(30)]
    # Down across three slots (40, 50, 60): one firing at restart, none repeated.
    clock.advance(33)
    with TaskScheduler(SqliteStore(path), clock=clock) as third:
        third.add_task("job", times, fired.append)
        third.wait_idle()
        assert third.tasks_info().next_triggers["job"] == at(70)
    assert fired == [at(10), at(20), at(30), at(40)]
    # Other times under the same id start afresh from now.
    with TaskScheduler(SqliteStore(path), clock=clock) as fourth:
        fourth.add_task("job", ScheduledTaskTime(interval_seconds=7), fired.append)
        assert fourth.tasks_info().next_triggers["job"] == at(63 + 7)
        assert fourth.remove_task("job") is True
    with TaskScheduler(SqliteStore(path), clock=clock) as fifth:
        fifth.add_task("job", times, fired.append)
        assert fifth.tasks_info().next_triggers["job"] == at(63 + 10)  # removed: afresh


def test_a_fired_one_shot_is_remembered_by_a_durable_store(tmp_path: Path):
    clock = FakeClock(START)
    fired = []
    once = ScheduledTaskTime(next_trigger_time=at(1))
    for _ in range(2):
        with TaskScheduler(SqliteStore(tmp_path / "t.db"), clock=clock) as sched:
            sched.add_task("once", once, fired.append)
            clock.advance(1)
            sched.wait_idle()
    assert fired == [at(1)]


def test_two_schedulers_on_one_store_fire_each_slot_once():
    clock = FakeClock(START)
    shared = MemoryScheduleStore()
    fired = []
    lock = threading.Lock()

    def record(name):
        def callback(slot):
            with lock:
                fired.append((slot, name))

        return callback

    a = TaskScheduler(shared, clock=clock).start()
    b = TaskScheduler(shared, clock=clock).start()
    try:
        a.add_task("x", ScheduledTaskTime(interval_seconds=1), record("a"))
        b.add_task("x", ScheduledTaskTime(interval_seconds=1), record("b"))
        for _ in range(20):
            clock.advance(1)
            a.wait_idle()
            b.wait_idle()
    finally:
        a.stop()
        b.stop()
    assert sorted(slot for slot, _ in fired) == [at(s) for s in range(1, 21)]


def test_store_selection(tmp_path: Path):
    memory, owned = for_target(None)
    assert isinstance(memory, MemoryScheduleStore)
    assert owned
    assert isinstance(for_target(MemoryStore())[0], MemoryScheduleStore)
    sqlite_store = SqliteStore(tmp_path / "x.db")
    chosen, owned = for_target(sqlite_store)
    assert isinstance(chosen, SqliteScheduleStore)
    assert owned
    assert chosen._path == sqlite_store.path
    given = MemoryScheduleStore()
    assert for_target(given) == (given, False)
    engine = TaskEngine(SqliteStore(tmp_path / "e.db"))
    try:
        assert isinstance(for_target(engine)[0], SqliteScheduleStore)
    finally:
        engine.stop()


def test_a_shared_store_with_dsn_and_schema_selects_postgres():
    """Written against PostgresStore's promised dsn/schema properties (duck-typed)."""
    from taskengine.stores import base
    from taskengine.stores.postgres.schedules import PgScheduleStore

    class FakeShared(MemoryStore):
        @property
        def capabilities(self):
            return base.StoreCapabilities(durable=True, shared=True)

        dsn = "postgresql://nobody@127.0.0.1:1/none"
        schema = "tenant_a"

    chosen, owned = for_target(FakeShared())
    assert isinstance(chosen, PgScheduleStore)
    assert owned
    assert chosen.schema == "tenant_a"
    assert chosen._dsn == FakeShared.dsn

    class DurableUnknown(MemoryStore):
        @property
        def capabilities(self):
            return base.StoreCapabilities(durable=True, shared=False)

    from taskengine import TaskValidationError

    with pytest.raises(TaskValidationError, match="ScheduleStore"):
        for_target(DurableUnknown())


def test_a_version_1_file_is_upgraded_with_its_tasks_kept(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in schema.DDL:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = SqliteScheduleStore(path)
    store.open()
    store.insert_or_get(rec([at(1)]))
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 4
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"tasks", "schedules"} <= tables


def test_undecodable_slots_are_a_store_error(tmp_path: Path):
    from taskengine import StoreError

    store = SqliteScheduleStore(tmp_path / "t.db")
    store.insert_or_get(rec([at(1)]))
    with sqlite3.connect(tmp_path / "t.db") as conn:
        conn.execute("UPDATE schedules SET slots = '[\"x\"]'")
    conn.close()
    with pytest.raises(StoreError, match="undecodable"):
        store.get("s")
    store.close()


def test_a_scheduler_on_an_engine_with_a_postgres_store_shares_the_schema(pg_schema):
    """With the real PostgresStore: tasks and schedules live in one schema, and a scheduled
    callback that creates a task lands in that table.  Real time: on PostgreSQL a slot is due by
    the database's clock, which a fake clock cannot move."""
    import taskengine
    from taskengine.stores.postgres.schedules import PgScheduleStore

    dsn, schema = pg_schema
    engine = taskengine.TaskEngine(taskengine.PostgresStore(dsn, schema=schema))
    try:
        chosen, owned = for_target(engine)
        assert isinstance(chosen, PgScheduleStore)
        assert owned
        assert chosen.schema == schema
        chosen.close()
        scheduler = TaskScheduler(engine).start()
        try:
            scheduler.add_task(
                "report",
                ScheduledTaskTime(interval_seconds=0.2),
                TaskScheduler.create_task_callback(engine, "report", {"n": 1}, retain_for=None),
            )
            until(lambda: len(engine.query(task_type="report").entities) >= 2, timeout=30)
        finally:
            scheduler.stop()
        tasks = engine.query(task_type="report").entities
        assert all(task.payload == {"n": 1} for task in tasks)
    finally:
        engine.stop()
