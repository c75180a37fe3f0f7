"""Model-based test of the engine (a RuleBasedStateMachine) against contract.md#transitions.

Rules create, cancel, retry and remove tasks, page through them, advance the fake clock and let
attempts run; each task's payload scripts what its handler does per attempt (succeed, fail,
crash, time out, cancel or remove itself).  After every step the engine's tasks must agree with
the dict-based reference model of ``engine_model.py`` (status, attempts, retries_remaining,
date_next_process, retention visibility), and each task's state-change callbacks must be
exactly the model's path, itself a path through the status table of contract.md#transitions.

Three variants: inline execution on MemoryStore and on SqliteStore (fast: no processes, fake
clock), and a smaller one with real worker processes, where crashes are real SIGKILLs, hung
attempts are terminated or SIGKILLed from outside, and timeouts kill real workers.
Example counts scale with the hypothesis profile (``ci``, ``dev``, ``soak``).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import taskengine
from taskengine import testing
from tests.conftest import until, worker_pids
from tests.properties.engine_model import ALLOWED_STEPS, Model, ModelTask
from tests.testing import handlers

MODULE = "tests.testing.handlers"
HANDLED = "model"  # the scripted handler
ORPHAN = "orphan"  # no handler: its tasks wait forever
HANG = "hang"  # real variant: attempts that block until terminated or killed

_PROFILE = settings.default
_BASE = _PROFILE.max_examples


def _scaled(fraction: float, minimum: int, steps: int) -> settings:
    return settings(
        _PROFILE,
        max_examples=max(minimum, int(_BASE * fraction)),
        stateful_step_count=steps,
        deadline=None,
    )


INLINE_STEPS = st.sampled_from(["ok", "fail", "crash", "timeout", "cancel_self", "remove_self"])
REAL_STEPS = st.sampled_from(["ok", "fail", "crash", "timeout"])


class EngineMachine(RuleBasedStateMachine):
    """Shared rules; subclasses choose the store and the execution mode."""

    mode = "inline"
    timeout_step = handlers.SCRIPTED_TIMEOUT_STEP
    steps = INLINE_STEPS

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="taskengine-machine-")
        self.clock = testing.FakeClock()
        handlers.CLOCK[:] = [self.clock]
        self.engine = taskengine.TaskEngine(
            self.make_store(), execution=self.mode, clock=self.clock, max_total_workers=6
        )
        handlers.ENGINE[:] = [self.engine]
        self.model = Model()
        self.calls: list[tuple[str, str]] = []
        self.calls_lock = threading.Lock()
        self.register()
        self.engine.start()

    def make_store(self) -> taskengine.stores.TaskStore:
        return taskengine.MemoryStore()

    def register(self) -> None:
        self.engine.register_handler(
            HANDLED, MODULE, "scripted", self.record, execution_timeout=30, max_worker_count=4
        )
        self.handled = {HANDLED}

    def record(self, task: taskengine.BackgroundTask) -> None:
        with self.calls_lock:
            self.calls.append((task.id, task.status.value))

    def teardown(self) -> None:
        self.engine.stop(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- creating -------------------------------------------------------------------------

    def _model_task(
        self, task_id: str, task_type: str, plan: list[str], options: dict[str, Any]
    ) -> None:
        now = self.clock.now()
        run_at = options.get("run_at")
        self.model.add(
            ModelTask(
                id=task_id,
                type=task_type,
                plan=plan,
                retry_interval=options["retry_interval"],
                retain_for=options["retain_for"],
                date_created=now,
                date_next_process=now if run_at is None else max(run_at, now),
                retries_remaining=options["retry_count"],
            )
        )

    @st.composite
    @staticmethod
    def _options(draw: st.DrawFn, clock: testing.FakeClock) -> dict[str, Any]:
        retry_count = draw(st.sampled_from([None, 0, 1, 2]))
        delay = draw(st.none() | st.integers(0, 90_000))
        return {
            "retry_count": retry_count,
            "retry_interval": draw(st.sampled_from([0.0, 0.5, 5.0, 60.0])),
            "retain_for": draw(st.sampled_from([None, 0.0, 1.0, 30.0])),
            "run_at": None if delay is None else clock.now() + timedelta(milliseconds=delay),
        }

    @rule(target=ids, data=st.data(), orphan=st.booleans())
    def create(self, data: st.DataObject, orphan: bool) -> str:
        plan = data.draw(st.lists(self.steps, max_size=3))
        options = data.draw(self._options(self.clock))
        task_type = ORPHAN if orphan else HANDLED
        task_id = self.engine.create(task_type, {"plan": plan}, **options)
        self._model_task(task_id, task_type, plan, options)
        self.settle()
        return task_id

    @rule(data=st.data(), count=st.integers(0, 4))
    def create_many(self, data: st.DataObject, count: int) -> None:
        plans = [data.draw(st.lists(self.steps, max_size=3)) for _ in range(count)]
        options = data.draw(self._options(self.clock))
        task_ids = self.engine.create_many(HANDLED, [{"plan": p} for p in plans], **options)
        assert len(task_ids) == count
        assert task_ids == sorted(task_ids)  # ids increase in creation order
        for task_id, plan in zip(task_ids, plans, strict=True):
            self._model_task(task_id, HANDLED, plan, options)
        self.settle()

    # -- changing -------------------------------------------------------------------------

    @rule(task_id=ids, terminate=st.booleans())
    def cancel(self, task_id: str, terminate: bool) -> None:
        expected = self.model.cancel(task_id, self.clock.now(), terminate=terminate)
        assert self.engine.cancel(task_id, terminate=terminate) is expected
        self.settle()

    @rule(task_id=ids)
    def retry(self, task_id: str) -> None:
        expected = self.model.retry(task_id, self.clock.now())
        assert self.engine.retry(task_id) is expected
        self.settle()

    @rule(task_id=ids)
    def remove(self, task_id: str) -> None:
        expected = self.model.remove(task_id, self.clock.now())
        assert self.engine.remove(task_id) is expected
        self.settle()

    @rule(millis=st.sampled_from([1, 499, 500, 1000, 5000, 30_000, 60_000, 90_000]))
    def advance(self, millis: int) -> None:
        self.clock.advance(timedelta(milliseconds=millis))
        self.settle()

    # -- running (inline: the test decides when; real: they run by themselves) -----------

    def settle(self) -> None:
        """Inline: nothing runs until asked.  Real pools: see RealProcessMachine."""

    @precondition(lambda self: self.mode == "inline")
    @rule()
    def run_next(self) -> None:
        now = self.clock.now()
        due = self.model.due(now, self.handled)
        before = len(self.calls)
        ran = self.engine.run_next()
        assert ran is bool(due)
        if due:
            with self.calls_lock:
                first = self.calls[before]
            assert first == (due[0].id, "processing"), "the earliest due task runs first"
            self.model.run_attempt(due[0], now, timeout_step=self.timeout_step)

    @precondition(lambda self: self.mode == "inline")
    @rule()
    def run_until_idle(self) -> None:
        # The model replays the same attempts in the same order; a timing-out handler moves
        # the clock, so the model's own "now" moves with it.
        now = self.clock.now()
        expected = 0
        while due := self.model.due(now, self.handled):
            now = self.model.run_attempt(due[0], now, timeout_step=self.timeout_step)
            expected += 1
        assert self.engine.run_until_idle() == expected
        assert self.clock.now() == now

    # -- reading --------------------------------------------------------------------------

    @rule(
        sort=st.sampled_from(["date_created", "date_modified", "date_completed", "status"]),
        page_size=st.integers(1, 7),
        status=st.none() | st.sampled_from(["pending", "failed", "success", "cancelled"]),
        of_type=st.none() | st.sampled_from([HANDLED, ORPHAN]),
    )
    def query_all_pages(
        self, sort: str, page_size: int, status: str | None, of_type: str | None
    ) -> None:
        now = self.clock.now()
        listings = {}
        for direction in ("asc", "desc"):
            seen: list[str] = []
            cursor = None
            while True:
                page = self.engine.query(
                    task_type=of_type,
                    status=status,
                    sort_property=sort,
                    sort_direction=direction,
                    cursor=cursor,
                    page_size=page_size,
                )
                assert len(page.entities) <= page_size
                seen.extend(task.id for task in page.entities)
                cursor = page.cursor
                if cursor is None:
                    break
            listings[direction] = seen
        expected = {
            t.id
            for t in self.model.live(now)
            if (status is None or t.status == status) and (of_type is None or t.type == of_type)
        }
        for seen in listings.values():
            assert len(seen) == len(set(seen)), "a page repeated a task"
            assert set(seen) == expected
        assert listings["desc"] == listings["asc"][::-1]
        if sort == "date_created":
            assert listings["asc"] == sorted(expected)

    # -- the check after every step -------------------------------------------------------

    def _paths(self) -> dict[str, list[str]]:
        with self.calls_lock:
            calls = list(self.calls)
        paths: dict[str, list[str]] = {}
        for task_id, status in calls:
            paths.setdefault(task_id, []).append(status)
        return paths

    def _expected_path(self, task: ModelTask) -> list[str]:
        # Callbacks belong to a registration: a type with no handler has none.
        return task.path if task.type in self.handled else []

    def _paths_arrived(self) -> bool:
        paths = self._paths()
        return all(paths.get(t.id, []) == self._expected_path(t) for t in self.model.tasks.values())

    @invariant()
    def engine_agrees_with_the_model(self) -> None:
        now = self.clock.now()
        # Callbacks of API calls (cancel, retry) run on the callback thread: wait for them.
        until(self._paths_arrived, timeout=10, step=0.001)
        paths = self._paths()
        for expected in self.model.tasks.values():
            got = self.engine.get(expected.id)
            if not expected.visible(now):
                assert got is None, (expected, got)
            else:
                assert got is not None, expected
                assert got.status.value == expected.status, (got, expected)
                assert got.attempts == expected.attempts, (got, expected)
                assert got.retries_remaining == expected.retries_remaining, (got, expected)
                assert got.date_next_process == expected.date_next_process, (got, expected)
                assert got.date_retain_until == expected.date_retain_until, (got, expected)
                assert got.date_completed == expected.date_completed, (got, expected)
                assert got.date_cancelled == expected.date_cancelled, (got, expected)
                assert (got.error.type if got.error else None) == expected.error_type, got
                if expected.status == "success":
                    assert got.result == expected.result
                if expected.status in ("success", "failed", "cancelled"):
                    assert self.engine.wait(expected.id, timeout=0).status is got.status
                else:
                    with pytest.raises(TimeoutError):
                        self.engine.wait(expected.id, timeout=0)
            path = paths.get(expected.id, [])
            assert path == self._expected_path(expected), (expected.id, path, expected.path)
            for step in zip(["pending", *expected.path], expected.path, strict=False):
                assert step in ALLOWED_STEPS, (expected.id, path)


class SqliteEngineMachine(EngineMachine):
    """The same machine on SqliteStore."""

    def make_store(self) -> taskengine.stores.TaskStore:
        return taskengine.SqliteStore(os.path.join(self.directory, "tasks.db"))


class RealProcessMachine(EngineMachine):
    """Real worker processes: crashes are SIGKILLs and timeouts kill workers.

    Attempts run on their own here, so every rule ends by waiting until the engine reaches the
    state the model predicts once all due work has run (``settle``).
    """

    mode = "processes"
    timeout_step = 0.0
    steps = REAL_STEPS

    def register(self) -> None:
        self.engine.register_handler(
            HANDLED, MODULE, "scripted", self.record, execution_timeout=0.5, max_worker_count=3
        )
        # A long execution_timeout keeps one attempt per worker (no prefetch behind a hang).
        self.engine.register_handler(
            HANG, MODULE, "scripted", self.record, execution_timeout=120, max_worker_count=2
        )
        self.handled = {HANDLED, HANG}

    def teardown(self) -> None:
        super().teardown()
        until(lambda: not worker_pids(), timeout=15)

    def settle(self) -> None:
        now = self.clock.now()
        while due := self.model.due(now, self.handled):
            for task in due:
                self.model.run_attempt(task, now, timeout_step=0.0)
        until(self._paths_arrived, timeout=60)

    def hanging(self) -> list[ModelTask]:
        return [t for t in self.model.tasks.values() if not t.gone and t.status == "processing"]

    @precondition(lambda self: len(self.hanging()) < 2)
    @rule(target=EngineMachine.ids, data=st.data())
    def create_hanging(self, data: st.DataObject) -> str:
        options = data.draw(self._options(self.clock))
        options["run_at"] = None
        task_id = self.engine.create(HANG, {"plan": ["hang"]}, **options)
        self._model_task(task_id, HANG, ["hang"], options)
        self.settle()
        return task_id

    @precondition(lambda self: bool(self.hanging()))
    @rule()
    def sigkill_hanging_workers(self) -> None:
        hung = self.hanging()
        reactor = self.engine._reactor

        def busy_pids() -> list[int]:
            facts = reactor.submit(reactor.pool_facts).result(timeout=10)  # type: ignore[union-attr]
            found = facts.get(HANG)
            return list(found.pids) if found is not None and found.busy == len(hung) else []

        pids = until(busy_pids, timeout=30)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        now = self.clock.now()
        for task in hung:
            self.model.attempt_failed(task, "WorkerCrashedError", now)
        self.settle()


TestEngineMachineMemory = EngineMachine.TestCase
TestEngineMachineMemory.settings = _scaled(1.0, 10, 40)
TestEngineMachineSqlite = SqliteEngineMachine.TestCase
TestEngineMachineSqlite.settings = _scaled(0.3, 5, 30)
TestEngineMachineRealProcesses = RealProcessMachine.TestCase
TestEngineMachineRealProcesses.settings = _scaled(0.05, 3, 12)
