"""The TaskStore contract, run against every store.

Every store must behave exactly like every other: the same records back, the same fences, the
same claim order, the same pages.  A new backend is added by one entry in ``STORE_FACTORIES``
(a PostgreSQL entry would skip locally without a DSN and fail in CI).
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from taskengine.core import codec, cursor, errors, models, transitions
from taskengine.stores import base
from taskengine.stores.memory.store import MemoryStore
from taskengine.stores.sqlite.store import SqliteStore
from tests.postgres import support as pg

from .factories import Status, at, claimer, drive, error, full_task, new, position

STORE_FACTORIES: dict[str, Callable[[Path], base.TaskStore]] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SqliteStore(tmp / "tasks.db", busy_timeout=10.0),
}

ASC, DESC = models.SortDirection.ASCENDING, models.SortDirection.DESCENDING
SORT_FIELDS = ["date_created", "date_modified", "date_completed", "status"]


@pytest.fixture(
    params=[*sorted(STORE_FACTORIES), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[base.TaskStore]:
    """An open, empty store of each kind (PostgreSQL: a fresh schema, dropped after)."""
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            dsn, schema = stack.enter_context(pg.fresh_schema())
            instance: base.TaskStore = pg.make_store(dsn, schema)
        else:
            instance = STORE_FACTORIES[request.param](tmp_path)
        instance.open()
        stack.callback(instance.close)
        yield instance


def spec_of(
    field: str = "date_created",
    direction: models.SortDirection = ASC,
    task_type: str | None = None,
    status: Status | None = None,
) -> cursor.QuerySpec:
    return cursor.QuerySpec(
        task_type=task_type, status=status, sort_field=field, direction=direction
    )


# -- lifecycle and round trip ---------------------------------------------------------------


def test_is_a_task_store_and_open_close_are_idempotent(store: base.TaskStore) -> None:
    assert isinstance(store, base.TaskStore)
    assert isinstance(store.capabilities, base.StoreCapabilities)
    store.open()
    store.open()
    assert store.get(new().id) is None


def test_round_trip_keeps_every_field(store: base.TaskStore) -> None:
    task = full_task()
    assert store.insert_many([task]) == [task.id]
    got = store.get(task.id)
    assert got == task
    assert got is not None
    assert type(got.payload_blob) is bytes
    assert got.payload_blob == task.payload_blob
    assert got.result_blob == task.result_blob
    assert got.payload == {"nested": [1, 2.5, "three", b"\x00\xff"], "n": None}
    assert got.result == list(range(50))
    assert got.error == error()
    for name in ("date_created", "date_modified", "date_completed", "date_cancelled"):
        moment = getattr(got, name)
        assert moment == getattr(task, name)
        assert moment.utcoffset() == timedelta(0)
        assert moment.microsecond % 1000 == 0


def test_round_trip_of_a_minimal_task(store: base.TaskStore) -> None:
    task = new(retain_for=0.0)
    store.insert_many([task])
    got = store.get(task.id)
    assert got == task
    assert got is not None
    assert got.payload is None
    assert got.result_blob is None
    assert got.error is None
    assert got.retries_remaining is None


def test_insert_many_returns_ids_in_order_and_empty_is_empty(store: base.TaskStore) -> None:
    assert store.insert_many([]) == []
    tasks = [new(payload=n) for n in range(5)]
    assert store.insert_many(tasks) == [t.id for t in tasks]
    assert [store.get(t.id) for t in tasks] == tasks


def test_duplicate_id_raises_and_stores_nothing_of_the_batch(store: base.TaskStore) -> None:
    first = new()
    store.insert_many([first])
    fresh = new()
    clash = new(task_id=first.id, payload="other")
    with pytest.raises(errors.StoreError):
        store.insert_many([fresh, clash])
    assert store.get(fresh.id) is None
    assert store.get(first.id) == first


def test_idempotency_key_returns_the_stored_id(store: base.TaskStore) -> None:
    original = new(key="k1")
    assert store.insert_many([original]) == [original.id]
    again, other = new(key="k1", payload="again"), new(key="k2")
    assert store.insert_many([again, other]) == [original.id, other.id]
    assert store.get(again.id) is None
    assert store.get(original.id) == original


def test_idempotency_key_repeated_within_one_batch(store: base.TaskStore) -> None:
    one, two = new(key="same"), new(key="same")
    assert store.insert_many([one, two]) == [one.id, one.id]
    assert store.get(two.id) is None


def test_idempotency_key_is_free_again_after_delete(store: base.TaskStore) -> None:
    original = new(key="k")
    store.insert_many([original])
    assert store.apply([base.Delete(task_id=original.id)]) == [True]
    replacement = new(key="k")
    assert store.insert_many([replacement]) == [replacement.id]


# -- fenced writes --------------------------------------------------------------------------


def test_update_applies_when_fences_match(store: base.TaskStore) -> None:
    task = new()
    store.insert_many([task])
    claimed = transitions.claim(task, at(1), "n")
    update = base.Update(task=claimed, expected_status=Status.PENDING, expected_attempts=0)
    assert store.apply([update]) == [True]
    assert store.get(task.id) == claimed


@pytest.mark.parametrize(
    ("status", "attempts"),
    [(Status.PROCESSING, 0), (Status.PENDING, 1), (Status.SUCCESS, 5)],
    ids=["wrong-status", "wrong-attempts", "both-wrong"],
)
def test_update_with_a_wrong_fence_changes_nothing(
    store: base.TaskStore, status: Status, attempts: int
) -> None:
    task = new()
    store.insert_many([task])
    changed = transitions.claim(task, at(1), "n")
    update = base.Update(task=changed, expected_status=status, expected_attempts=attempts)
    assert store.apply([update]) == [False]
    assert store.get(task.id) == task


def test_update_of_a_missing_task_is_false_and_creates_nothing(store: base.TaskStore) -> None:
    task = new()
    update = base.Update(task=task, expected_status=Status.PENDING, expected_attempts=0)
    assert store.apply([update]) == [False]
    assert store.get(task.id) is None


def test_several_writes_in_one_apply_see_each_other(store: base.TaskStore) -> None:
    a, b, c = new(), new(), new()
    store.insert_many([a, b, c])
    a1 = transitions.claim(a, at(1), "n")
    a2 = transitions.succeed(a1, codec.encode("ok"), at(2))
    writes: list[base.Write] = [
        base.Update(task=a1, expected_status=Status.PENDING, expected_attempts=0),
        base.Update(task=a2, expected_status=Status.PROCESSING, expected_attempts=1),
        base.Update(task=a2, expected_status=Status.PROCESSING, expected_attempts=1),
        base.Delete(task_id=b.id, expected_status=Status.PENDING, expected_attempts=0),
        base.Delete(task_id=b.id),
        base.Delete(task_id=c.id, expected_status=Status.FAILED),
    ]
    assert store.apply(writes) == [True, True, False, True, False, False]
    assert store.get(a.id) == a2
    assert store.get(b.id) is None
    assert store.get(c.id) == c
    assert store.apply([]) == []


@pytest.mark.parametrize(
    ("status", "attempts", "applies"),
    [
        (None, None, True),
        (Status.PROCESSING, None, True),
        (None, 1, True),
        (Status.PROCESSING, 1, True),
        (Status.PENDING, None, False),
        (None, 0, False),
        (Status.PROCESSING, 2, False),
        (Status.PENDING, 1, False),
    ],
)
def test_delete_fences(
    store: base.TaskStore, status: Status | None, attempts: int | None, applies: bool
) -> None:
    task = transitions.claim(new(), at(1), "n")
    store.insert_many([task])
    delete = base.Delete(task_id=task.id, expected_status=status, expected_attempts=attempts)
    assert store.apply([delete]) == [applies]
    assert store.get(task.id) == (None if applies else task)


def test_delete_of_a_missing_task_is_false(store: base.TaskStore) -> None:
    assert store.apply([base.Delete(task_id=new().id)]) == [False]


# -- claiming -------------------------------------------------------------------------------


def test_claim_due_takes_oldest_due_first_then_by_id(store: base.TaskStore) -> None:
    due_times = [5, 1, 3, 1, 5, 0, 3]
    tasks = [new(run_at=at(ms)) for ms in due_times]
    random.Random(7).shuffle(tasks)
    store.insert_many(tasks)
    expected = sorted(tasks, key=lambda t: (t.date_next_process, t.id))
    claimed = store.claim_due("alpha", at(10), 100, claimer(at(10)))
    assert [t.id for t in claimed] == [t.id for t in expected]
    for task in claimed:
        assert task.status is Status.PROCESSING
        assert task.attempts == 1
        assert task.node_identity is not None
        assert store.get(task.id) == task


def test_claim_due_respects_the_limit(store: base.TaskStore) -> None:
    tasks = [new(run_at=at(ms)) for ms in range(7)]
    store.insert_many(tasks)
    assert store.claim_due("alpha", at(10), 0, claimer(at(10))) == []
    first = store.claim_due("alpha", at(10), 3, claimer(at(10)))
    second = store.claim_due("alpha", at(10), 3, claimer(at(10)))
    third = store.claim_due("alpha", at(10), 3, claimer(at(10)))
    assert [t.id for t in first + second + third] == [t.id for t in tasks]
    assert [len(first), len(second), len(third)] == [3, 3, 1]
    assert store.claim_due("alpha", at(10), 3, claimer(at(10))) == []


def test_claim_due_takes_only_due_pending_tasks_of_the_type(store: base.TaskStore) -> None:
    due = new(run_at=at(5))
    exactly_due = new(run_at=at(10))
    future = new(run_at=at(11))
    other_type = new("beta", run_at=at(0))
    not_pending = [drive(new(), status, at(1)) for status in Status if status is not Status.PENDING]
    store.insert_many([due, exactly_due, future, other_type, *not_pending])
    claimed = store.claim_due("alpha", at(10), 100, claimer(at(10)))
    assert [t.id for t in claimed] == [due.id, exactly_due.id]
    assert store.get(future.id) == future
    assert store.get(other_type.id) == other_type
    for task in not_pending:
        assert store.get(task.id) == task


def test_claim_due_sees_rescheduled_tasks(store: base.TaskStore) -> None:
    task = new(run_at=at(0))
    store.insert_many([task])
    later = attrs.evolve(task, date_next_process=at(100), date_modified=at(1))
    update = base.Update(task=later, expected_status=Status.PENDING, expected_attempts=0)
    assert store.apply([update]) == [True]
    assert store.claim_due("alpha", at(50), 10, claimer(at(50))) == []
    assert store.next_due(["alpha"]) == at(100)
    assert [t.id for t in store.claim_due("alpha", at(100), 10, claimer(at(100)))] == [task.id]


def test_each_task_is_claimed_once_by_racing_threads(store: base.TaskStore) -> None:
    tasks = [new(run_at=at(ms % 17)) for ms in range(240)]
    store.insert_many(tasks)
    barrier = threading.Barrier(4)
    claims: list[list[models.BackgroundTask]] = [[] for _ in range(4)]
    failures: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            while batch := store.claim_due("alpha", at(100), 3, claimer(at(100), f"node{k}")):
                claims[k].extend(batch)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    claimed = [task.id for batch in claims for task in batch]
    assert len(claimed) == len(set(claimed)) == len(tasks)
    assert set(claimed) == {t.id for t in tasks}
    for k, batch in enumerate(claims):
        for task in batch:
            stored = store.get(task.id)
            assert stored is not None
            assert (stored.attempts, stored.node_identity) == (1, f"node{k}")


def test_next_due(store: base.TaskStore) -> None:
    assert store.next_due(["alpha"]) is None
    assert store.next_due([]) is None
    store.insert_many(
        [
            new(run_at=at(30)),
            new(run_at=at(20)),
            new("beta", run_at=at(10)),
            new("gamma", run_at=at(5)),
            drive(new(run_at=at(1)), Status.PROCESSING, at(1)),
            drive(new(run_at=at(2)), Status.CANCELLED, at(1)),
        ]
    )
    assert store.next_due(["alpha"]) == at(20)
    assert store.next_due(["alpha", "beta"]) == at(10)
    assert store.next_due(["beta", "nothing"]) == at(10)
    assert store.next_due(["nothing"]) is None
    store.claim_due("beta", at(10), 10, claimer(at(10)))
    assert store.next_due(["alpha", "beta"]) == at(20)


# -- queries --------------------------------------------------------------------------------


def populate(store: base.TaskStore) -> list[models.BackgroundTask]:
    """About 60 tasks over 3 types and every status, with many ties in every sort value."""
    rnd = random.Random(20240517)
    tasks = []
    for n in range(60):
        created = at(rnd.choice([0, 0, 1, 2, 3, 5, 8]))
        status = rnd.choice(list(Status))
        task = new(rnd.choice(["alpha", "beta", "gamma"]), now=created, payload=n)
        tasks.append(
            drive(task, status, created + timedelta(milliseconds=rnd.choice([1, 1, 4, 9])))
        )
    # Past their retention at QUERY_NOW: stored, but invisible to query.
    for n in range(4):
        gone = drive(new("alpha", retain_for=1.0, payload=n), Status.SUCCESS, at(n))
        tasks.append(gone)
    rnd.shuffle(tasks)
    store.insert_many(tasks)
    return tasks


QUERY_NOW = at(60_000)


def expected_listing(
    tasks: list[models.BackgroundTask], spec: cursor.QuerySpec
) -> list[models.BackgroundTask]:
    rows = [
        t
        for t in tasks
        if (spec.task_type is None or t.type == spec.task_type)
        and (spec.status is None or t.status is spec.status)
        and transitions.is_visible(t, QUERY_NOW)
    ]
    return sorted(
        rows,
        key=lambda t: cursor.sort_key(t, spec.sort_field),
        reverse=spec.direction is DESC,
    )


def all_pages(
    store: base.TaskStore,
    spec: cursor.QuerySpec,
    page_size: int,
    between: Callable[[], None] = lambda: None,
) -> list[models.BackgroundTask]:
    listing: list[models.BackgroundTask] = []
    after = None
    for _ in range(1000):
        page = store.query(spec, after, page_size, QUERY_NOW)
        assert len(page) <= page_size
        listing += page
        if len(page) < page_size:
            return listing
        after = position(page[-1], spec.sort_field)
        between()
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("direction", [ASC, DESC])
@pytest.mark.parametrize("field", SORT_FIELDS)
def test_query_pages_match_the_reference_order(
    store: base.TaskStore, field: str, direction: models.SortDirection
) -> None:
    tasks = populate(store)
    for task_type in (None, "alpha", "nothing"):
        for status in (None, *Status):
            spec = spec_of(field, direction, task_type, status)
            expected = [t.id for t in expected_listing(tasks, spec)]
            for page_size in (1, 3, 7, 1000):
                got = [t.id for t in all_pages(store, spec, page_size)]
                assert got == expected, (spec, page_size)


@pytest.mark.parametrize("field", SORT_FIELDS)
def test_descending_is_the_exact_reverse_of_ascending(store: base.TaskStore, field: str) -> None:
    populate(store)
    for task_type in (None, "beta"):
        ascending = all_pages(store, spec_of(field, ASC, task_type), 4)
        descending = all_pages(store, spec_of(field, DESC, task_type), 5)
        assert len(ascending) > 10
        assert [t.id for t in descending] == [t.id for t in reversed(ascending)]


def test_query_returns_whole_records(store: base.TaskStore) -> None:
    tasks = populate(store)
    by_id = {t.id: t for t in tasks}
    for task in all_pages(store, spec_of(), 1000):
        assert task == by_id[task.id]


@pytest.mark.parametrize("direction", [ASC, DESC])
@pytest.mark.parametrize("field", ["date_created", "status"])
def test_pages_never_skip_or_repeat_while_tasks_are_added(
    store: base.TaskStore, field: str, direction: models.SortDirection
) -> None:
    original = populate(store)
    rnd = random.Random(3)

    def insert_more() -> None:
        store.insert_many([new(now=at(rnd.randrange(-5, 20)), payload="late") for _ in range(3)])

    spec = spec_of(field, direction)
    listing = all_pages(store, spec, 4, between=insert_more)
    ids = [t.id for t in listing]
    assert len(ids) == len(set(ids))
    visible = {t.id for t in original if transitions.is_visible(t, QUERY_NOW)}
    assert visible <= set(ids)
    assert ids == [
        t.id
        for t in sorted(listing, key=lambda t: cursor.sort_key(t, field), reverse=direction is DESC)
    ]


def test_query_hides_tasks_past_their_retention(store: base.TaskStore) -> None:
    task = drive(new(retain_for=10.0), Status.SUCCESS, at(0))
    assert task.date_retain_until == at(10_000)
    store.insert_many([task])
    spec = spec_of()
    assert [t.id for t in store.query(spec, None, 10, at(9_999))] == [task.id]
    assert store.query(spec, None, 10, at(10_000)) == []
    assert store.query(spec_of(status=Status.SUCCESS), None, 10, at(10_001)) == []
    # The record stays until it is purged; visibility is the engine's and query's business.
    assert store.get(task.id) == task


def test_query_with_limit_zero_is_empty(store: base.TaskStore) -> None:
    populate(store)
    assert store.query(spec_of(), None, 0, QUERY_NOW) == []


# -- retention ------------------------------------------------------------------------------


def test_purge_expired_deletes_earliest_first_up_to_the_limit(store: base.TaskStore) -> None:
    assert store.next_expiry() is None
    expiring = [drive(new(retain_for=float(s)), Status.SUCCESS, at(0)) for s in (3, 1, 2, 1, 5)]
    forever = drive(new(retain_for=None), Status.FAILED, at(0))
    pending = new()
    store.insert_many([*expiring, forever, pending])
    order = sorted(expiring, key=lambda t: (t.date_retain_until, t.id))
    assert store.next_expiry() == at(1_000)
    assert store.purge_expired(at(999), 10) == []
    assert store.purge_expired(at(5_000), 0) == []
    assert store.purge_expired(at(2_000), 2) == [order[0].id, order[1].id]
    assert store.next_expiry() == at(2_000)
    assert store.purge_expired(at(2_000), 10) == [order[2].id]
    assert store.purge_expired(at(10_000), 10) == [order[3].id, order[4].id]
    assert store.next_expiry() is None
    for task in expiring:
        assert store.get(task.id) is None
    assert store.get(forever.id) == forever
    assert store.get(pending.id) == pending


def test_next_expiry_follows_updates_and_deletes(store: base.TaskStore) -> None:
    task = drive(new(retain_for=5.0), Status.FAILED, at(0))
    other = drive(new(retain_for=9.0), Status.CANCELLED, at(0))
    store.insert_many([task, other])
    assert store.next_expiry() == at(5_000)
    revived = transitions.retry(task, at(1))
    update = base.Update(task=revived, expected_status=Status.FAILED, expected_attempts=1)
    assert store.apply([update]) == [True]
    assert store.next_expiry() == at(9_000)
    assert store.purge_expired(at(20_000), 10) == [other.id]
    assert store.get(task.id) == revived
    assert store.apply([base.Delete(task_id=task.id)]) == [True]
    assert store.next_expiry() is None


# -- recovery -------------------------------------------------------------------------------


def test_processing_lists_exactly_the_processing_tasks(store: base.TaskStore) -> None:
    assert store.processing() == []
    tasks = [drive(new(), status, at(1)) for status in Status for _ in range(2)]
    store.insert_many(tasks)
    running = sorted((t for t in tasks if t.status is Status.PROCESSING), key=lambda t: t.id)
    assert sorted(store.processing(), key=lambda t: t.id) == running


def test_hostile_strings_are_plain_values(store: base.TaskStore) -> None:
    hostile = "x'; DROP TABLE tasks; --"
    task = attrs.evolve(new(hostile, key=hostile), node_identity=hostile)
    canary = new()
    store.insert_many([task, canary])
    assert store.get(task.id) == task
    spec = spec_of(task_type=hostile)
    assert store.query(spec, None, 10, QUERY_NOW) == [task]
    assert store.query(spec_of(task_type="' OR 1=1 --"), None, 10, QUERY_NOW) == []
    assert store.next_due([hostile]) == task.date_next_process
    assert store.get(canary.id) == canary


# -- group commit and the dispatch lock -----------------------------------------------------


def test_apply_and_claim_writes_then_claims_in_one_call(store: base.TaskStore) -> None:
    first, second = new(run_at=at(0)), new(run_at=at(0))
    store.insert_many([first, second])
    [claimed_first] = store.claim_due("alpha", at(1), 1, claimer(at(1)))
    # Hand the claimed attempt back (a prefetched attempt whose worker died) and claim in the
    # same call: the handed-back task is due again and is claimed by the same commit.
    back = transitions.release(claimed_first, at(2))
    update = base.Update(task=back, expected_status=Status.PROCESSING, expected_attempts=1)
    applied, claimed = store.apply_and_claim(
        [update], [("alpha", 5), ("beta", 5), ("alpha", 0)], at(2), claimer(at(2))
    )
    assert applied == [True]
    assert {t.id for t in claimed[0]} == {first.id, second.id}
    assert claimed[1:] == [[], []]
    for task in claimed[0]:
        assert store.get(task.id) == task
        assert task.attempts == 1


def test_apply_and_claim_with_nothing_to_do(store: base.TaskStore) -> None:
    assert store.apply_and_claim([], [], at(0), claimer(at(0))) == ([], [])
    assert store.apply_and_claim([], [("alpha", 3)], at(0), claimer(at(0))) == ([], [[]])


def test_a_failing_claim_claims_nothing(store: base.TaskStore) -> None:
    tasks = [new(run_at=at(0)) for _ in range(3)]
    store.insert_many(tasks)
    calls = 0

    def explode_on_second(task: models.BackgroundTask) -> models.BackgroundTask:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("claim failed")
        return claimer(at(1))(task)

    with pytest.raises(RuntimeError):
        store.claim_due("alpha", at(1), 3, explode_on_second)
    for task in tasks:
        assert store.get(task.id) == task
    assert len(store.claim_due("alpha", at(1), 3, claimer(at(1)))) == 3


def test_an_id_repeated_within_one_batch_stores_nothing(store: base.TaskStore) -> None:
    task = new()
    with pytest.raises(errors.StoreError):
        store.insert_many([task, attrs.evolve(task, payload_blob=codec.encode("other"))])
    assert store.get(task.id) is None


def test_dispatch_lock_is_exclusive_until_close(tmp_path: Path) -> None:
    for kind, factory in STORE_FACTORIES.items():
        (tmp_path / kind).mkdir()
        first = factory(tmp_path / kind)
        first.open()
        first.acquire_dispatch_lock("node-a")
        first.acquire_dispatch_lock("node-a")  # the holder may ask again
        if kind == "memory":
            second = first  # one MemoryStore object shared by two engines
        else:
            second = factory(tmp_path / kind)
            second.open()
        with pytest.raises(errors.StoreError, match="node-a"):
            second.acquire_dispatch_lock("node-b")
        first.close()
        second.acquire_dispatch_lock("node-b")
        second.close()


def test_a_task_rescheduled_to_the_same_due_time_is_claimed_once(store: base.TaskStore) -> None:
    task = new(run_at=at(0))
    store.insert_many([task])
    same = transitions.retry(task, at(0))  # pending stays due at the same instant
    update = base.Update(task=same, expected_status=Status.PENDING, expected_attempts=0)
    assert store.apply([update]) == [True]
    claimed = store.claim_due("alpha", at(0), 5, claimer(at(0)))
    assert [t.id for t in claimed] == [task.id]
    assert claimed[0].attempts == 1


def test_a_run_of_same_shaped_writes_reports_the_one_whose_fence_failed(
    store: base.TaskStore,
) -> None:
    # A group commit's finishing deletes share one statement; SQL stores send such a run in
    # one batch and must still say which single write did not apply.
    tasks = [transitions.claim(new(), at(1), "n") for _ in range(40)]
    store.insert_many(tasks)
    writes: list[base.Write] = [
        base.Delete(task_id=task.id, expected_status=Status.PROCESSING, expected_attempts=1)
        for task in tasks
    ]
    writes[17] = base.Delete(
        task_id=tasks[17].id, expected_status=Status.PROCESSING, expected_attempts=2
    )
    expected = [index != 17 for index in range(40)]
    assert store.apply(writes) == expected
    assert [store.get(task.id) for task in tasks] == [
        None if applied else task for task, applied in zip(tasks, expected, strict=True)
    ]
