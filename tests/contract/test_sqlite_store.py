"""What only SqliteStore promises: files, durability, refusal of foreign files, locking, plans."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskengine.core import cursor, errors, models, transitions
from taskengine.stores import base
from taskengine.stores.sqlite import schema
from taskengine.stores.sqlite.store import SqliteStore
from taskengine.testing import strategies

from .factories import Status, at, claimer, drive, full_task, new

ASC, DESC = models.SortDirection.ASCENDING, models.SortDirection.DESCENDING


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    instance = SqliteStore(db_path, busy_timeout=10.0)
    instance.open()
    try:
        yield instance
    finally:
        instance.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            continue
    return count


# -- arguments and lifecycle -----------------------------------------------------------------


def test_constructor_validates_and_does_not_touch_the_disk(db_path: Path) -> None:
    SqliteStore(db_path, synchronous="normal", busy_timeout=0)
    assert not db_path.exists()
    for bad in ("off", "FULL", "", None, 2):
        with pytest.raises(errors.TaskValidationError, match="synchronous"):
            SqliteStore(db_path, synchronous=bad)  # type: ignore[arg-type]
    for timeout in (-1, float("nan"), float("inf"), True, "10"):
        with pytest.raises(errors.TaskValidationError, match="busy_timeout"):
            SqliteStore(db_path, busy_timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(errors.TaskValidationError, match="path"):
        SqliteStore("")


@pytest.mark.parametrize(("synchronous", "level"), [("full", 2), ("normal", 1)])
def test_synchronous_level_and_wal_mode(db_path: Path, synchronous: str, level: int) -> None:
    store = SqliteStore(db_path, synchronous=synchronous)
    store.open()
    try:
        writer = store._writer
        assert writer is not None
        assert writer.execute("PRAGMA synchronous").fetchone()[0] == level
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.capabilities == base.StoreCapabilities(durable=True, shared=False)
    finally:
        store.close()


def test_lifecycle_implicit_open_close_and_reopen(db_path: Path) -> None:
    store = SqliteStore(db_path)
    task = new()
    assert store.insert_many([task]) == [task.id]  # opens implicitly
    store.open()
    store.close()
    store.close()
    with pytest.raises(errors.StoreError, match="closed"):
        store.get(task.id)
    store.open()
    try:
        assert store.get(task.id) == task
    finally:
        store.close()


def test_data_survives_close_and_reopen(db_path: Path) -> None:
    first = SqliteStore(db_path)
    first.open()
    task, other = full_task(), new(run_at=at(5))
    first.insert_many([task, other])
    claimed = first.claim_due("alpha", at(10), 5, claimer(at(10)))
    first.close()
    second = SqliteStore(db_path)
    second.open()
    try:
        assert second.get(task.id) == task
        assert second.get(other.id) == claimed[0]
        assert second.processing() == claimed
        assert second.next_expiry() == task.date_retain_until
    finally:
        second.close()


def test_close_closes_the_connections_of_every_thread(store: SqliteStore, db_path: Path) -> None:
    task = new()
    store.insert_many([task])
    for _ in range(3):
        batch = [threading.Thread(target=store.get, args=(task.id,)) for _ in range(10)]
        for thread in batch:
            thread.start()
        for thread in batch:
            thread.join(timeout=30)
    # Each new reader closes the connections of finished threads, so 30 threads leave at most
    # one batch of connections.  The file descriptors can lag behind: SQLite defers closing the
    # descriptor of a connection closed while another one holds a lock on the file (and reuses
    # it later), and how many that is depends on the threads' timing; a loaded machine saw 15.
    store.get(task.id)
    assert len(store._readers) <= 11  # this thread's reader and at most one batch
    assert 0 < open_fds_to(db_path) <= 2 * 10 + 2
    store.close()
    assert open_fds_to(db_path) == 0


# -- files and permissions -------------------------------------------------------------------


def test_files_are_created_0600_even_under_umask_0(db_path: Path) -> None:
    old = os.umask(0)
    try:
        store = SqliteStore(db_path)
        store.open()
    finally:
        os.umask(old)
    try:
        store.insert_many([new()])
        store.get(new().id)
        for suffix in ("", "-wal", "-shm"):
            side = Path(f"{db_path}{suffix}")
            assert side.exists(), suffix
            assert mode_of(side) == 0o600, suffix
    finally:
        store.close()


def test_warns_about_files_writable_by_others(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SqliteStore(db_path).open()
    db_path.chmod(0o666)
    db_path.parent.chmod(0o770)
    try:
        with caplog.at_level(logging.WARNING, logger="taskengine.stores.sqlite.files"):
            store = SqliteStore(db_path)
            store.open()
            store.close()
    finally:
        db_path.parent.chmod(0o700)
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(db_path) in m and "database file" in m for m in messages)
    assert any(str(db_path.parent) in m and "directory" in m for m in messages)


# -- files it does not understand ------------------------------------------------------------


def test_newer_schema_version_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).open()
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 7")
    before = digest(db_path)
    with pytest.raises(errors.SchemaVersionError) as caught:
        SqliteStore(db_path).open()
    message = str(caught.value)
    assert str(db_path) in message
    assert "7" in message
    assert str(schema.SCHEMA_VERSION) in message
    assert digest(db_path) == before


def test_garbage_file_is_refused_at_open_and_left_alone(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database\n" * 200)
    before = digest(db_path)
    store = SqliteStore(db_path)
    with pytest.raises(errors.StoreError) as caught:
        store.open()
    assert str(db_path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert digest(db_path) == before
    with pytest.raises(errors.StoreError):
        store.get(new().id)  # an implicit open fails the same way


def test_foreign_database_is_refused_and_left_alone(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (9.5)")
    conn.close()
    before = digest(db_path)
    with pytest.raises(errors.StoreError, match="no taskengine schema version") as caught:
        SqliteStore(db_path).open()
    assert str(db_path) in str(caught.value)
    assert digest(db_path) == before
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_version_2_file_gets_the_version_3_indexes_and_keeps_its_tasks(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.open()
    tasks = [drive(new("t", now=at(n)), status, at(n + 1)) for n, status in enumerate(Status)]
    store.insert_many(tasks)
    store.close()
    # Turn the file into version 2: the same query-page indexes, over every status.
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TRIGGER tasks_delete_blobs")
        conn.execute("DROP TABLE task_blobs")
        for name in schema.LISTING_NAMES:
            conn.execute(f"DROP INDEX {name}")
        for statement in schema.LISTING_INDEXES:
            if "tasks_processing" not in statement:
                conn.execute(statement.replace(" WHERE status <> 'processing'", ""))
        conn.execute("PRAGMA user_version = 2")
    conn.close()

    store = SqliteStore(db_path)
    store.open()
    try:
        assert [store.get(task.id) for task in tasks] == tasks
        processing = [task for task in tasks if task.status is Status.PROCESSING]
        assert store.processing() == processing
        spec = cursor.QuerySpec(
            task_type="t", status=Status.PROCESSING, sort_field="date_created", direction=ASC
        )
        assert store.query(spec, None, 10, at(0)) == processing
        assert sorted(count.status for count in store.count_tasks(at(0))) == sorted(Status)
    finally:
        store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 4
        indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    conn.close()
    for name in schema.LISTING_NAMES:
        assert "WHERE status" in indexes[name], indexes[name]


def test_count_tasks_reads_the_indexes_in_group_order(filled: Path) -> None:
    # A count reads every row, but it never sorts them: the listed statuses' groups come in
    # index order, and only the small processing arm groups through a sort.
    lines = [line for line in plan(filled, schema.COUNT_TASKS, {"now": 0}) if "QUERY" not in line]
    assert len(lines) == 4, lines
    assert re.fullmatch(r"SCAN tasks USING (COVERING )?INDEX tasks_type_status_\w+", lines[0])
    assert lines[1:] == [
        "UNION ALL",
        "SCAN tasks USING INDEX tasks_processing",
        "USE TEMP B-TREE FOR GROUP BY",
    ], lines


def test_versioned_database_without_tasks_table_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE other (x)")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(errors.StoreError, match="without a tasks table"):
        SqliteStore(db_path).open()


def test_missing_directory_or_a_directory_path_is_a_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent" / "tasks.db"
    with pytest.raises(errors.StoreError, match="absent"):
        SqliteStore(missing).open()
    with pytest.raises(errors.StoreError, match=str(tmp_path)):
        SqliteStore(tmp_path).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_is_a_store_error(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(errors.StoreError, match="locked"):
            SqliteStore(folder / "tasks.db").open()
    finally:
        folder.chmod(0o700)


def test_undecodable_rows_are_reported_per_task(store: SqliteStore, db_path: Path) -> None:
    broken, fine = new(), new()
    store.insert_many([broken, fine])
    with sqlite3.connect(db_path) as side:
        side.execute("UPDATE tasks SET error = 'not json' WHERE id = ?", (broken.id,))
        side.execute("UPDATE tasks SET payload = x'00ff' WHERE id = ?", (fine.id,))
    side.close()
    with pytest.raises(errors.StoreError, match=broken.id):
        store.get(broken.id)
    got = store.get(fine.id)
    assert got is not None
    assert got.type == "alpha"
    with pytest.raises(errors.StoreError, match="payload"):
        _ = got.payload


# -- transactions and locking ----------------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tasks=st.lists(
        strategies.task_records(), min_size=1, max_size=8, unique_by=lambda task: task.id
    ),
    node=st.text(min_size=1, max_size=20),
    progress=st.lists(st.none() | st.floats(0, 1), min_size=8, max_size=8),
)
def test_the_sql_claim_changes_exactly_what_transitions_claim_does(
    tmp_path_factory: pytest.TempPathFactory,
    tasks: list[models.BackgroundTask],
    node: str,
    progress: list[float | None],
) -> None:
    # A failed attempt keeps the progress it reported: pending tasks may carry one.
    tasks = [attrs.evolve(task, progress=p) for task, p in zip(tasks, progress, strict=False)]
    folder = tmp_path_factory.mktemp("claim")
    in_sql, each = SqliteStore(folder / "sql.db"), SqliteStore(folder / "each.db")
    try:
        for store in (in_sql, each):
            store.insert_many(tasks)
        now = max(task.date_next_process or task.date_modified for task in tasks)
        now += timedelta(seconds=1)
        for task_type in {task.type for task in tasks}:
            due = [t for t in tasks if t.type == task_type and t.status is Status.PENDING]
            expected = [
                transitions.claim(task, now, node)
                for task in sorted(due, key=lambda task: (task.date_next_process, task.id))
            ]
            claimed = in_sql.claim_due(task_type, now, 10, transitions.Claim(now, node))
            assert claimed == expected
            # The row-by-row path (any other callable) agrees.
            plain = each.claim_due(
                task_type, now, 10, lambda task: transitions.claim(task, now, node)
            )
            assert plain == expected
        stored = {task.id: task for task in tasks} | {task.id: task for task in in_sql.processing()}
        assert [in_sql.get(task.id) for task in tasks] == [stored[task.id] for task in tasks]
    finally:
        in_sql.close()
        each.close()


def test_a_failing_claim_rolls_the_whole_claim_back(store: SqliteStore) -> None:
    tasks = [new(run_at=at(n)) for n in range(3)]
    store.insert_many(tasks)
    seen: list[str] = []

    def claim_then_fail(task: models.BackgroundTask) -> models.BackgroundTask:
        seen.append(task.id)
        if len(seen) == 2:
            raise RuntimeError("claim failed")
        return transitions.claim(task, at(10), "n")

    with pytest.raises(RuntimeError, match="claim failed"):
        store.claim_due("alpha", at(10), 10, claim_then_fail)
    assert [store.get(t.id) for t in tasks] == tasks
    assert len(store.claim_due("alpha", at(10), 10, claimer(at(10)))) == 3


@pytest.mark.parametrize(
    "count", [1, schema.INSERT_ROWS - 1, schema.INSERT_ROWS, schema.INSERT_ROWS + 1, 123]
)
def test_a_batch_of_any_size_is_stored_whole_across_multi_row_inserts(
    store: SqliteStore, count: int
) -> None:
    tasks = [new(payload=n, run_at=at(n)) for n in range(count)]
    assert store.insert_many(tasks) == [task.id for task in tasks]
    assert [store.get(task.id) for task in tasks] == tasks
    claimed = store.claim_due("alpha", at(count), count + 1, claimer(at(count)))
    assert [task.id for task in claimed] == [task.id for task in tasks]


def test_a_duplicate_id_in_a_later_insert_statement_stores_nothing(store: SqliteStore) -> None:
    existing = new()
    store.insert_many([existing])
    batch = [new() for _ in range(2 * schema.INSERT_ROWS)]
    batch[-3] = new(task_id=existing.id)  # in the batch's last statement
    with pytest.raises(errors.StoreError, match="exists"):
        store.insert_many(batch)
    assert all(store.get(task.id) is None for task in batch[:-3])
    assert store.get(existing.id) == existing


def test_fenced_deletes_in_bulk_answer_for_each_write(store: SqliteStore) -> None:
    # More than one DELETE statement's worth, under two fences, one of them stale.
    count = schema.DELETE_IDS + 20
    tasks = [new() for _ in range(count)]
    store.insert_many(tasks)
    claimed = store.claim_due("alpha", at(10), count, claimer(at(10)))
    retried = {task.id for task in claimed[::7]}
    store.apply(
        [
            base.Update(
                task=attrs.evolve(task, attempts=2),
                expected_status=Status.PROCESSING,
                expected_attempts=1,
            )
            for task in claimed
            if task.id in retried
        ]
    )
    stale = claimed[7 * (count // 14)].id  # one of the retried tasks, mid-batch
    writes = [
        base.Delete(
            task_id=task.id,
            expected_status=Status.PROCESSING,
            expected_attempts=1 if task.id == stale or task.id not in retried else 2,
        )
        for task in claimed
    ]
    assert stale in retried  # its fence (attempts 1) no longer holds
    applied = store.apply(writes)
    assert applied == [task.id != stale for task in claimed]
    assert [task.id for task in claimed if store.get(task.id) is not None] == [stale]


@pytest.mark.parametrize("ids", [0, schema.DELETE_IDS + 1])
def test_a_fenced_delete_outside_its_bounds_is_refused(ids: int) -> None:
    with pytest.raises(ValueError, match="carries 1 to"):
        schema.delete_fenced_sql(ids)


@pytest.mark.parametrize("rows", [0, schema.INSERT_ROWS + 1])
def test_a_multi_row_insert_outside_its_bounds_is_refused(rows: int) -> None:
    with pytest.raises(ValueError, match="carries 1 to"):
        schema.insert_sql(rows)


def test_an_insert_that_fails_stores_nothing(store: SqliteStore) -> None:
    good = new()
    bad = attrs.evolve(new(), attempts=-1)  # breaks the table's CHECK constraint
    with pytest.raises(errors.StoreError) as caught:
        store.insert_many([good, bad])
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert store.get(good.id) is None
    assert store.insert_many([good]) == [good.id]


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


def test_write_waits_for_another_process_then_raises(db_path: Path) -> None:
    store = SqliteStore(db_path, busy_timeout=0.3)
    store.open()
    known = new()
    store.insert_many([known])
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        began = time.monotonic()
        with pytest.raises(errors.StoreError) as caught:
            store.insert_many([new()])
        waited = time.monotonic() - began
        assert waited >= 0.25
        assert str(db_path) in str(caught.value)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        # Readers are not blocked in WAL mode.
        assert store.get(known.id) == known
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    fresh = new()
    assert store.insert_many([fresh]) == [fresh.id]
    store.close()


def test_write_waiting_on_a_lock_completes_once_it_is_released(store: SqliteStore) -> None:
    holder = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    task = new()
    done = threading.Event()
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(store.insert_many([task]))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        # The write cannot finish while the lock is held, whatever the timing.
        assert not done.wait(timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.wait(timeout=30)
    writer.join(timeout=30)
    assert outcome == [[task.id]]


def test_reads_do_not_wait_for_a_write_in_progress(store: SqliteStore) -> None:
    task = new()
    store.insert_many([task])
    inside, release = threading.Event(), threading.Event()
    result: list[object] = []

    def slow_claim(record: models.BackgroundTask) -> models.BackgroundTask:
        inside.set()
        assert release.wait(timeout=30)
        return transitions.claim(record, at(1), "n")

    def claim() -> None:
        try:
            result.append(store.claim_due("alpha", at(1), 1, slow_claim))
        except BaseException as exc:
            result.append(exc)

    claimer_thread = threading.Thread(target=claim)
    claimer_thread.start()
    try:
        assert inside.wait(timeout=30)
        # The write transaction is open (uncommitted): readers see the last committed state.
        assert store.get(task.id) == task
        spec = cursor.QuerySpec(task_type="alpha", status=None, sort_field="status", direction=ASC)
        assert store.query(spec, None, 10, at(1)) == [task]
        assert store.processing() == []
    finally:
        release.set()
        claimer_thread.join(timeout=30)
    assert len(result) == 1
    claimed = result[0]
    assert isinstance(claimed, list)
    assert store.processing() == claimed


# -- query plans -----------------------------------------------------------------------------


def plan(db_path: Path, sql: str, params: Sequence[object] | Mapping[str, object]) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    conn.close()
    return [row[3] for row in rows]


def assert_indexed(lines: list[str]) -> None:
    """Index range reads only, except over ``tasks_processing``: a partial index of the few
    processing tasks, which may be read whole and sorted."""
    assert lines
    previous = ""
    for line in lines:
        if "INDEX tasks_processing" in line or (
            "TEMP B-TREE" in line and "INDEX tasks_processing" in previous
        ):
            previous = line
            continue
        assert not line.startswith("SCAN"), lines
        assert "TEMP B-TREE" not in line, lines
        previous = line


@pytest.fixture
def filled(store: SqliteStore, db_path: Path) -> Path:
    tasks = [drive(new(f"t{n % 3}", now=at(n)), list(Status)[n % 5], at(n + 1)) for n in range(300)]
    store.insert_many(tasks)
    return db_path


def test_get_and_due_selection_use_indexes(filled: Path) -> None:
    assert plan(filled, schema.SELECT_BY_ID, ("x",)) == [
        "SEARCH tasks USING INDEX sqlite_autoindex_tasks_1 (id=?)"
    ]
    due = plan(filled, schema.SELECT_DUE, ("t1", 5, 10))
    assert_indexed(due)
    assert "tasks_due" in due[0]
    for sql, params in [
        (schema.NEXT_DUE, ("t1",)),
        (schema.NEXT_EXPIRY, ()),
        (schema.PURGE, (5, 10)),
        (schema.SELECT_PROCESSING, ()),
        (schema.ID_BY_KEY, ("k",)),
    ]:
        assert_indexed(plan(filled, sql, params))


QUERY_PARAMS = {
    "type": "t1",
    "status": "success",
    "now": 0,
    "value": 5,
    "after_id": "a",
    "limit": 20,
}


@pytest.mark.parametrize("keyset", [False, True])
@pytest.mark.parametrize("direction", [ASC, DESC])
@pytest.mark.parametrize("field", ["date_created", "date_modified", "date_completed"])
@pytest.mark.parametrize(
    ("task_type", "status"),
    [(None, None), ("t1", Status.SUCCESS), ("t1", None), (None, Status.SUCCESS)],
    ids=["unfiltered", "type-and-status", "type", "status"],
)
def test_date_sorted_pages_read_index_ranges_only(
    filled: Path,
    task_type: str | None,
    status: Status | None,
    field: str,
    direction: models.SortDirection,
    keyset: bool,
) -> None:
    spec = cursor.QuerySpec(
        task_type=task_type, status=status, sort_field=field, direction=direction
    )
    assert_indexed(plan(filled, schema.query_sql(spec, keyset=keyset), QUERY_PARAMS))


@pytest.mark.parametrize("status", [None, Status.PENDING])
def test_status_sorted_pages_without_type_filter_use_the_status_index(
    filled: Path, status: Status | None
) -> None:
    for direction in (ASC, DESC):
        spec = cursor.QuerySpec(
            task_type=None, status=status, sort_field="status", direction=direction
        )
        for keyset in (False, True):
            # An in-order walk of the status index that stops at the page size (never a
            # sort), merged with the processing tasks when no status is filtered.
            lines = plan(filled, schema.query_sql(spec, keyset=keyset), QUERY_PARAMS)
            reads = [line for line in lines if line.startswith(("SCAN", "SEARCH"))]
            assert len(reads) == (1 if status else 2), lines
            assert re.search(r"USING (COVERING )?INDEX tasks_status\b", reads[0]), lines
            if keyset and status is None:
                assert "(status,id)" in reads[0], lines  # a seek, not a walk from the start
            assert not any("TEMP B-TREE" in line for line in lines), lines


def test_query_sql_takes_sort_text_only_from_the_whitelist() -> None:
    spec = cursor.QuerySpec(
        task_type=None, status=None, sort_field="date_created; DROP TABLE tasks", direction=ASC
    )
    with pytest.raises(KeyError):
        schema.query_sql(spec, keyset=False)


def _odd_names(tmp_path: Path) -> dict[str, str]:
    """Valid POSIX names that a ``file:`` URI must not misread."""
    return {
        "doubled leading slash": "//" + str(tmp_path / "doubled.db").lstrip("/"),
        "question mark": str(tmp_path / "what?mode=ro.db"),
        "hash": str(tmp_path / "a#fragment.db"),
        "percent": str(tmp_path / "100%25.db"),
        "spaces": str(tmp_path / "with some spaces.db"),
        "all at once": "//" + str(tmp_path / "d?i#r %2F x").lstrip("/") + "/t a?s#k%s.db",
    }


@pytest.mark.parametrize("how", list(_odd_names(Path("/x"))))
def test_any_valid_file_name_opens_the_file_it_names(tmp_path: Path, how: str) -> None:
    name = _odd_names(tmp_path)[how]
    os.makedirs(os.path.dirname(name), exist_ok=True)
    store = SqliteStore(name)
    store.open()
    try:
        task = new("odd-name")
        store.insert_many([task])
        assert store.get(task.id) == task
    finally:
        store.close()
    # The file is the one named, not a file of a shortened or decoded name.
    assert os.path.getsize(name) > 0
    assert all(
        entry.startswith(os.path.basename(name)) for entry in os.listdir(os.path.dirname(name))
    )
    reopened = SqliteStore(name)
    try:
        assert reopened.get(task.id) == task
    finally:
        reopened.close()


@pytest.mark.parametrize("how", list(_odd_names(Path("/x"))))
def test_the_schedule_store_opens_any_valid_file_name(tmp_path: Path, how: str) -> None:
    from taskengine.stores.schedules import ScheduleRecord
    from taskengine.stores.sqlite.schedules import SqliteScheduleStore

    name = _odd_names(tmp_path)[how]
    os.makedirs(os.path.dirname(name), exist_ok=True)
    record = ScheduleRecord(schedule_id="s", times_key="k", slots=(at(1), None))
    schedules = SqliteScheduleStore(name)
    schedules.open()
    try:
        assert schedules.insert_or_get(record) == record
    finally:
        schedules.close()
    conn = sqlite3.connect(name)
    try:
        assert conn.execute("SELECT count(*) FROM schedules").fetchone()[0] == 1
    finally:
        conn.close()


def test_a_failed_open_leaves_no_empty_file_behind(tmp_path: Path) -> None:
    # SQLite refuses paths longer than its own limit (512 bytes) that the file system accepts:
    # the file is created, then the connection fails.
    folder = tmp_path
    while len(str(folder)) < 600:
        folder = folder / ("d" * 100)
    folder.mkdir(parents=True)
    name = folder / "tasks.db"
    with pytest.raises(errors.StoreError, match="cannot open"):
        SqliteStore(name).open()
    assert not name.exists()
    # A file that was there before is left alone, even an empty one.
    name.touch()
    with pytest.raises(errors.StoreError, match="cannot open"):
        SqliteStore(name).open()
    assert name.exists()
