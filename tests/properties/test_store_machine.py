"""Model-based test: MemoryStore and SqliteStore against a dict reference, step by step.

Hypothesis drives random sequences of the engine's store operations (create, claim, finish,
fail, release, cancel, retry, remove, late fenced writes, clock steps, retention purges).  The
reference model is a plain dict updated as contract.md#transitions says; after every step
both stores must hold exactly the model's records and agree on due work and on every page.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from taskengine.core import codec, cursor, models, transitions
from taskengine.stores import base
from taskengine.stores.memory.store import MemoryStore
from taskengine.stores.sqlite.store import SqliteStore
from tests.contract.factories import T0, new

Status = models.TaskStatus
TYPES = ("alpha", "beta")
NODE = "machine:1:node"


class StoreMachine(RuleBasedStateMachine):
    """Both stores, one reference dict, one clock."""

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-machine-"))
        self.stores: list[base.TaskStore] = [MemoryStore(), SqliteStore(self.dir / "t.db")]
        for store in self.stores:
            store.open()
        self.model: dict[str, models.BackgroundTask] = {}
        self.now = T0

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------

    def write_everywhere(self, write: base.Write) -> bool:
        results = {store.apply([write])[0] for store in self.stores}
        assert len(results) == 1, "the stores disagree on a fenced write"
        return results.pop()

    def change(self, old: models.BackgroundTask, new_task: models.BackgroundTask) -> None:
        update = base.Update(
            task=new_task, expected_status=old.status, expected_attempts=old.attempts
        )
        assert self.write_everywhere(update)
        self.model[new_task.id] = new_task

    def pick(self, data: st.DataObject, status: Status) -> models.BackgroundTask | None:
        live = sorted((t for t in self.model.values() if t.status is status), key=lambda t: t.id)
        return data.draw(st.sampled_from(live)) if live else None

    # -- rules --------------------------------------------------------------------------

    @rule(
        target=tasks,
        task_type=st.sampled_from(TYPES),
        delay_ms=st.integers(0, 3000),
        retry_count=st.none() | st.integers(0, 2),
        retain_for=st.none() | st.sampled_from([0.0, 0.5, 5.0]),
        payload=st.integers() | st.text(max_size=5),
    )
    def create(self, task_type, delay_ms, retry_count, retain_for, payload):
        task = new(
            task_type,
            now=self.now,
            run_at=self.now + timedelta(milliseconds=delay_ms),
            payload=payload,
            retry_count=retry_count,
            retain_for=retain_for,
        )
        for store in self.stores:
            assert store.insert_many([task]) == [task.id]
        self.model[task.id] = task
        return task.id

    @rule(task_type=st.sampled_from(TYPES), limit=st.integers(0, 4))
    def claim(self, task_type, limit):
        def claim_fn(task):
            return transitions.claim(task, self.now, NODE)

        results = [store.claim_due(task_type, self.now, limit, claim_fn) for store in self.stores]
        assert results[0] == results[1]
        now_ms = self.now
        expected = sorted(
            (
                t
                for t in self.model.values()
                if t.type == task_type
                and t.status is Status.PENDING
                and t.date_next_process is not None
                and t.date_next_process <= now_ms
            ),
            key=lambda t: (t.date_next_process, t.id),
        )[:limit]
        assert [t.id for t in results[0]] == [t.id for t in expected]
        for task in results[0]:
            self.model[task.id] = task

    @rule(data=st.data(), succeed=st.booleans())
    def finish(self, data, succeed):
        task = self.pick(data, Status.PROCESSING)
        if task is None:
            return
        if succeed:
            done = transitions.succeed(task, codec.encode(task.id), self.now)
        else:
            error = models.TaskError(type="ValueError", message="planned")
            done = transitions.fail_attempt(task, error, self.now)
        if done.status.is_final and done.retain_for == 0:
            delete = base.Delete(
                task_id=task.id, expected_status=task.status, expected_attempts=task.attempts
            )
            assert self.write_everywhere(delete)
            del self.model[task.id]
        else:
            self.change(task, done)

    @rule(data=st.data())
    def release(self, data):
        task = self.pick(data, Status.PROCESSING)
        if task is not None:
            self.change(task, transitions.release(task, self.now))

    @rule(data=st.data(), terminate=st.booleans())
    def cancel(self, data, terminate):
        task = self.pick(data, data.draw(st.sampled_from([Status.PENDING, Status.PROCESSING])))
        if task is None or (task.status is Status.PROCESSING and not terminate):
            return
        self.change(task, transitions.cancel(task, self.now, terminate=terminate))

    @rule(data=st.data())
    def retry(self, data):
        task = self.pick(data, data.draw(st.sampled_from([Status.PENDING, Status.FAILED])))
        if task is not None:
            self.change(task, transitions.retry(task, self.now))

    @rule(task_id=consumes(tasks))
    def remove(self, task_id):
        applied = self.write_everywhere(base.Delete(task_id=task_id))
        assert applied == (task_id in self.model)
        self.model.pop(task_id, None)

    @rule(data=st.data())
    def late_write_changes_nothing(self, data):
        """A stale writer (old status or attempt) is fenced off."""
        candidates = sorted(self.model.values(), key=lambda t: t.id)
        if not candidates:
            return
        task = data.draw(st.sampled_from(candidates))
        stale = base.Update(
            task=task, expected_status=task.status, expected_attempts=task.attempts + 1
        )
        assert not self.write_everywhere(stale)

    @rule(ms=st.integers(1, 4000))
    def advance(self, ms):
        self.now = self.now + timedelta(milliseconds=ms)

    @rule(limit=st.integers(1, 5))
    def purge(self, limit):
        purged = [sorted(store.purge_expired(self.now, limit)) for store in self.stores]
        assert purged[0] == purged[1]
        for task_id in purged[0]:
            task = self.model.pop(task_id)
            assert task.date_retain_until is not None
            assert task.date_retain_until <= self.now

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def stores_hold_the_model(self):
        for task_id, task in self.model.items():
            for store in self.stores:
                assert store.get(task_id) == task

    @invariant()
    def due_work_agrees(self):
        for task_type in TYPES:
            pending = [
                t.date_next_process
                for t in self.model.values()
                if t.type == task_type and t.status is Status.PENDING
            ]
            expected = min((d for d in pending if d is not None), default=None)
            for store in self.stores:
                assert store.next_due([task_type]) == expected

    @invariant()
    def every_page_agrees(self):
        spec = cursor.QuerySpec(
            task_type=None,
            status=None,
            sort_field="date_modified",
            direction=models.SortDirection.DESCENDING,
        )
        visible = [t for t in self.model.values() if transitions.is_visible(t, self.now)]
        expected = sorted(visible, key=lambda t: cursor.sort_key(t, "date_modified"), reverse=True)
        for store in self.stores:
            got, after = [], None
            while True:
                page = store.query(spec, after, 3, self.now)
                got.extend(page)
                if len(page) < 3:
                    break
                value, last = cursor.sort_key(page[-1], "date_modified")
                after = cursor.CursorPosition(value=value, task_id=last)
            assert [t.id for t in got] == [t.id for t in expected]

    @invariant()
    @precondition(lambda self: bool(self.model))
    def processing_agrees(self):
        expected = sorted(t.id for t in self.model.values() if t.status is Status.PROCESSING)
        for store in self.stores:
            assert sorted(t.id for t in store.processing()) == expected


StoreMachine.TestCase.settings = settings(stateful_step_count=30, deadline=None)
TestStoreMachine = StoreMachine.TestCase
