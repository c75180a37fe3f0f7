"""A state machine: the scheduler on a fake clock against a tiny model of contract.md#scheduler."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from taskengine import ScheduledTaskTime, TaskScheduler
from taskengine.core.clock import FakeClock, to_millis

from .conftest import START

IDS = st.sampled_from(["a", "b", "c"])
#: 0 is a one-shot (fires once, now).
INTERVALS_MS = st.sampled_from([0, 1000, 2500, 7000])
STEPS_MS = st.sampled_from([1, 500, 1000, 3000, 10_000, 60_000])


class SchedulerMachine(RuleBasedStateMachine):
    """Model: per id its interval and pending slot; a due slot fires once, missed ones collapse."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.scheduler = TaskScheduler(clock=self.clock).start()
        self.now = to_millis(START)
        self.model: dict[str, tuple[int, int | None]] = {}  # id -> (interval, pending slot)
        self.expected: dict[str, list[int]] = {}
        self.fired: dict[str, list[int]] = {}

    def _callback(self, task_id: str):
        def record(slot):
            self.fired.setdefault(task_id, []).append(to_millis(slot))

        return record

    def _fire_due(self) -> None:
        for task_id, (every, slot) in list(self.model.items()):
            if slot is None or slot > self.now:
                continue
            self.expected.setdefault(task_id, []).append(slot)
            nxt = None if every == 0 else slot + max(1, (self.now - slot) // every + 1) * every
            self.model[task_id] = (every, nxt)

    @rule(task_id=IDS, every=INTERVALS_MS)
    def add(self, task_id: str, every: int) -> None:
        time = ScheduledTaskTime(interval_seconds=every / 1000)
        self.scheduler.add_task(task_id, time, self._callback(task_id))
        old = self.model.get(task_id)
        if old is not None and old[0] == every:
            pass  # same times: the stored slot goes on
        else:
            self.model[task_id] = (every, self.now + every)
        self._fire_due()
        self.scheduler.wait_idle()

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.model)))
        assert self.scheduler.remove_task(task_id) is True
        del self.model[task_id]

    @rule(step=STEPS_MS)
    def advance(self, step: int) -> None:
        self.clock.advance(timedelta(milliseconds=step))
        self.now += step
        self._fire_due()
        self.scheduler.wait_idle()

    @invariant()
    def fired_as_the_model_says(self) -> None:
        assert self.fired == self.expected
        info = self.scheduler.tasks_info()
        assert {i: None if s is None else to_millis(s) for i, s in info.next_triggers.items()} == {
            i: slot for i, (_, slot) in self.model.items()
        }

    def teardown(self) -> None:
        self.scheduler.stop(timeout=10)


SchedulerMachine.TestCase.settings = settings(stateful_step_count=30, deadline=None)
test_scheduler_machine = SchedulerMachine.TestCase
