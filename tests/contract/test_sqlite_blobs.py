"""SqliteStore's large blobs: stored out of the task row (``task_blobs``), read back by every path.

A payload or result of ``schema.LARGE_BLOB`` bytes or more is kept in ``task_blobs`` and its
column holds an empty marker; every read path returns the real bytes, every write path keeps
``task_blobs`` in step with the row (a stale blob removed, a deleted task's blobs gone), in the
same transaction as the row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from taskengine.core import codec, cursor, errors, models, transitions
from taskengine.stores import base
from taskengine.stores.sqlite import schema
from taskengine.stores.sqlite.store import SqliteStore

from .factories import NODE, Status, at, claimer, drive, new

ASC = models.SortDirection.ASCENDING
#: A value whose blob is just over the threshold (the header and pickle framing add a little).
LARGE_VALUE = bytes(range(256)) * (schema.LARGE_BLOB // 256 + 16)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    instance = SqliteStore(db_path)
    instance.open()
    try:
        yield instance
    finally:
        instance.close()


def raw(db_path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(sql, params).fetchall()
    conn.close()
    return rows


def blobs_in_file(db_path: Path) -> dict[tuple[str, str], int]:
    """(task id, kind) -> length of every out-of-row blob."""
    rows = raw(db_path, "SELECT task_id, kind, length(data) FROM task_blobs")
    return {(str(task_id), str(kind)): int(str(size)) for task_id, kind, size in rows}


def row_lengths(db_path: Path, task_id: str) -> tuple[object, ...]:
    [row] = raw(
        db_path, "SELECT length(payload), length(result) FROM tasks WHERE id = ?", (task_id,)
    )
    return row


def succeeded(task: models.BackgroundTask, value: object) -> models.BackgroundTask:
    return transitions.succeed(task, codec.encode(value), at(20))


def finish(store: SqliteStore, claimed: models.BackgroundTask, value: object) -> bool:
    done = succeeded(claimed, value)
    update = base.Update(
        task=done,
        expected_status=Status.PROCESSING,
        expected_attempts=claimed.attempts,
        previous=claimed,
    )
    [applied] = store.apply([update])
    return applied


def test_a_large_payload_lives_out_of_the_row_and_every_read_returns_it(
    store: SqliteStore, db_path: Path
) -> None:
    task = new(payload=LARGE_VALUE)
    assert len(task.payload_blob) >= schema.LARGE_BLOB
    small = new(payload="small")
    store.insert_many([task, small])
    assert row_lengths(db_path, task.id) == (0, None)
    assert blobs_in_file(db_path) == {(task.id, "payload"): len(task.payload_blob)}

    assert store.get(task.id) == task
    spec = cursor.QuerySpec(
        task_type="alpha", status=None, sort_field="date_created", direction=ASC
    )
    assert {t.id: t for t in store.query(spec, None, 10, at(0))} == {
        task.id: task,
        small.id: small,
    }
    [claimed, other] = store.claim_due("alpha", at(10), 10, claimer(at(10)))
    assert claimed == transitions.claim(task, at(10), NODE)
    assert claimed.payload == LARGE_VALUE
    assert other == transitions.claim(small, at(10), NODE)
    assert {t.id: t for t in store.processing()} == {claimed.id: claimed, other.id: other}
    processing = cursor.QuerySpec(
        task_type="alpha", status=Status.PROCESSING, sort_field="date_created", direction=ASC
    )
    assert {t.id for t in store.query(processing, None, 10, at(0))} == {task.id, small.id}
    # The claim left the blob where it was: it changed only the small columns.
    assert blobs_in_file(db_path) == {(task.id, "payload"): len(task.payload_blob)}


def test_the_row_by_row_claim_reads_and_keeps_large_payloads(
    store: SqliteStore, db_path: Path
) -> None:
    task = new(payload=LARGE_VALUE)
    store.insert_many([task])
    [claimed] = store.claim_due("alpha", at(10), 10, lambda t: transitions.claim(t, at(10), NODE))
    assert claimed == transitions.claim(task, at(10), NODE)
    assert store.get(task.id) == claimed
    assert row_lengths(db_path, task.id) == (0, None)
    assert blobs_in_file(db_path) == {(task.id, "payload"): len(task.payload_blob)}


def test_a_claim_that_changes_a_large_payload_stores_the_new_one(
    store: SqliteStore, db_path: Path
) -> None:
    task = new(payload=LARGE_VALUE)
    store.insert_many([task])
    bigger = codec.encode(LARGE_VALUE * 2)

    def rewrite(record: models.BackgroundTask) -> models.BackgroundTask:
        return attrs.evolve(transitions.claim(record, at(10), NODE), payload_blob=bigger)

    [claimed] = store.claim_due("alpha", at(10), 10, rewrite)
    assert store.get(task.id) == claimed
    assert blobs_in_file(db_path) == {(task.id, "payload"): len(bigger)}


def test_a_large_result_is_stored_after_the_fenced_update_and_read_back(
    store: SqliteStore, db_path: Path
) -> None:
    task = new(payload="p")
    store.insert_many([task])
    [claimed] = store.claim_due("alpha", at(10), 1, claimer(at(10)))
    assert finish(store, claimed, LARGE_VALUE)
    done = succeeded(claimed, LARGE_VALUE)
    assert store.get(task.id) == done
    assert done.result == LARGE_VALUE
    assert row_lengths(db_path, task.id)[1] == 0
    assert blobs_in_file(db_path) == {(task.id, "result"): len(done.result_blob or b"")}
    spec = cursor.QuerySpec(
        task_type=None, status=Status.SUCCESS, sort_field="date_completed", direction=ASC
    )
    assert store.query(spec, None, 10, at(0)) == [done]


def test_a_fenced_update_that_does_not_hold_stores_no_blob(
    store: SqliteStore, db_path: Path
) -> None:
    task = new(payload="p")
    store.insert_many([task])
    [claimed] = store.claim_due("alpha", at(10), 1, claimer(at(10)))
    stale = attrs.evolve(claimed, attempts=claimed.attempts + 1)
    assert not finish(store, stale, LARGE_VALUE)
    assert blobs_in_file(db_path) == {}
    assert store.get(task.id) == claimed


@pytest.mark.parametrize("known_previous", [True, False])
def test_a_large_value_rewritten_small_leaves_no_stale_blob(
    store: SqliteStore, db_path: Path, known_previous: bool
) -> None:
    task = new(payload="p")
    store.insert_many([task])
    [claimed] = store.claim_due("alpha", at(10), 1, claimer(at(10)))
    assert finish(store, claimed, LARGE_VALUE)
    done = succeeded(claimed, LARGE_VALUE)
    for small in (b"small", b""):  # an empty value too: the marker alone means empty
        rewritten = attrs.evolve(done, result_blob=small)
        update = base.Update(
            task=rewritten,
            expected_status=Status.SUCCESS,
            expected_attempts=done.attempts,
            previous=done if known_previous else None,
        )
        assert store.apply([update]) == [True]
        assert blobs_in_file(db_path) == {}
        assert store.get(task.id) == rewritten
        done = rewritten
        # Back to large, for the next round.
        large = attrs.evolve(done, result_blob=codec.encode(LARGE_VALUE))
        update = base.Update(
            task=large,
            expected_status=Status.SUCCESS,
            expected_attempts=done.attempts,
            previous=done if known_previous else None,
        )
        assert store.apply([update]) == [True]
        assert store.get(task.id) == large
        done = large


def test_a_genuinely_empty_value_stays_empty(store: SqliteStore) -> None:
    task = attrs.evolve(new(), payload_blob=b"")
    store.insert_many([task])
    assert store.get(task.id) == task
    [claimed] = store.claim_due("alpha", at(10), 1, claimer(at(10)))
    assert claimed.payload_blob == b""


def test_deleting_a_task_removes_its_blobs(store: SqliteStore, db_path: Path) -> None:
    fenced, unfenced, expiring, kept = (new(payload=LARGE_VALUE, retain_for=1.0) for _ in range(4))
    store.insert_many([fenced, unfenced, expiring, kept])
    assert len(blobs_in_file(db_path)) == 4
    deletes = [
        base.Delete(task_id=fenced.id, expected_status=Status.PENDING, expected_attempts=0),
        base.Delete(task_id=unfenced.id),
    ]
    assert store.apply(deletes) == [True, True]
    assert set(blobs_in_file(db_path)) == {(expiring.id, "payload"), (kept.id, "payload")}
    cancelled = transitions.cancel(expiring, at(5))
    assert store.apply(
        [base.Update(task=cancelled, expected_status=Status.PENDING, expected_attempts=0)]
    ) == [True]
    assert cancelled.date_retain_until is not None
    assert store.purge_expired(cancelled.date_retain_until, 10) == [expiring.id]
    assert set(blobs_in_file(db_path)) == {(kept.id, "payload")}
    assert store.get(kept.id) == kept


def test_a_failed_caller_of_a_group_commit_leaves_no_blob(
    store: SqliteStore, db_path: Path
) -> None:
    existing = new(payload="first")
    store.insert_many([existing])
    clash = attrs.evolve(new(payload=LARGE_VALUE), id=existing.id)
    with pytest.raises(errors.StoreError, match="exists"):
        store.insert_many([new(payload=LARGE_VALUE), clash])
    assert blobs_in_file(db_path) == {}
    assert store.get(existing.id) == existing


def test_an_idempotent_duplicate_stores_no_second_blob(store: SqliteStore, db_path: Path) -> None:
    first = new(payload=LARGE_VALUE, key="k")
    again = new(payload=LARGE_VALUE, key="k")
    assert store.insert_many([first]) == [first.id]
    assert store.insert_many([again]) == [first.id]
    assert blobs_in_file(db_path) == {(first.id, "payload"): len(first.payload_blob)}


def test_a_rolled_back_claim_keeps_the_blobs_as_they_were(
    store: SqliteStore, db_path: Path
) -> None:
    task = new(payload=LARGE_VALUE)
    store.insert_many([task])

    def fail(record: models.BackgroundTask) -> models.BackgroundTask:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.claim_due("alpha", at(10), 1, fail)
    assert store.get(task.id) == task
    assert blobs_in_file(db_path) == {(task.id, "payload"): len(task.payload_blob)}


def test_status_of_reads_the_status_without_the_task(store: SqliteStore) -> None:
    task = new(payload=LARGE_VALUE)
    store.insert_many([task])
    assert isinstance(store, base.StatusReader)
    assert store.status_of(task.id) == (Status.PENDING, None)
    assert store.status_of("absent") is None
    done = drive(new(retain_for=3.0), Status.SUCCESS, at(5))
    store.insert_many([done])
    assert store.status_of(done.id) == (Status.SUCCESS, done.date_retain_until)


def test_a_version_3_file_gets_the_blob_table_and_keeps_its_tasks(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.open()
    tasks = [drive(new("t", now=at(n)), status, at(n + 1)) for n, status in enumerate(Status)]
    # A version 3 file held large payloads in the row: they stay there and read as before.
    legacy = new("t", payload=LARGE_VALUE, now=at(50))
    store.insert_many(tasks)
    store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TRIGGER tasks_delete_blobs")
        conn.execute("DROP TABLE task_blobs")
        conn.execute(schema.INSERT, schema.to_row(legacy))
        conn.execute("PRAGMA user_version = 3")
    conn.close()

    store = SqliteStore(db_path)
    store.open()
    try:
        assert [store.get(task.id) for task in tasks] == tasks
        assert store.get(legacy.id) == legacy
        processing = [task for task in tasks if task.status is Status.PROCESSING]
        assert store.processing() == processing
        assert sorted(count.status for count in store.count_tasks(at(0))) == sorted(Status)
        claimed = store.claim_due("t", at(100), 10, claimer(at(100)))
        assert [task.id for task in claimed] == [tasks[0].id, legacy.id]
        assert claimed[1].payload == LARGE_VALUE
        fresh = new("t", payload=LARGE_VALUE)
        store.insert_many([fresh])
        assert store.get(fresh.id) == fresh
    finally:
        store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 4
        objects = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"task_blobs", "tasks_delete_blobs"} <= objects
    assert row_lengths(db_path, legacy.id)[0] == len(legacy.payload_blob)
    assert blobs_in_file(db_path) == {(fresh.id, "payload"): len(fresh.payload_blob)}


def test_a_version_4_file_is_refused_by_a_version_3_reader(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteStore(db_path).open()
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    with pytest.raises(errors.SchemaVersionError, match="version is 4"):
        SqliteStore(db_path).open()


def test_wait_learns_that_a_task_is_unfinished_without_reading_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taskengine

    store = SqliteStore(db_path)
    whole_reads: list[str] = []
    read = store.get

    def counting_get(task_id: str) -> models.BackgroundTask | None:
        whole_reads.append(task_id)
        return read(task_id)

    monkeypatch.setattr(store, "get", counting_get)
    engine = taskengine.TaskEngine(store)
    try:
        task_id = engine.create("alpha", LARGE_VALUE)
        with pytest.raises(TimeoutError):
            engine.wait(task_id, timeout=0)
        assert task_id not in whole_reads
        # A finished task is still read whole, to be returned.
        engine.cancel(task_id)
        assert engine.wait(task_id, timeout=0).status is Status.CANCELLED
        assert task_id in whole_reads
    finally:
        engine.stop()
