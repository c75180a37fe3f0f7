from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.core import codec, transitions
from taskengine.core.models import BackgroundTask, TaskError, TaskStatus
from taskengine.core.transitions import Blocked

from .factories import NODE, NOW, TASK_ID, error, in_status, later, new

P, PR, S, F, C = (
    TaskStatus.PENDING,
    TaskStatus.PROCESSING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)
RESULT = codec.encode({"answer": 42})


def claimed(**options: object) -> BackgroundTask:
    return transitions.claim(new(**options), later(1), NODE)  # type: ignore[arg-type]


# --- new_task -----------------------------------------------------------------


def test_new_task_fields() -> None:
    task = new(payload={"x": 1}, retry_count=2, retry_interval=7.5, retain_for=None)
    assert task.id == TASK_ID
    assert task.type == "demo"
    assert task.status is P
    assert task.payload == {"x": 1}
    assert task.result_blob is None
    assert task.error is None
    assert task.date_created == task.date_modified == NOW
    assert task.date_next_process == NOW
    assert task.date_completed is None
    assert task.date_cancelled is None
    assert task.date_retain_until is None
    assert task.retries_remaining == 2
    assert task.retry_interval == 7.5
    assert task.retain_for is None
    assert task.attempts == 0
    assert task.node_identity is None
    assert task.progress is None
    assert task.idempotency_key is None


def test_new_task_keeps_retry_forever_and_idempotency_key() -> None:
    task = new(retry_count=None, idempotency_key="key-1")
    assert task.retries_remaining is None
    assert task.idempotency_key == "key-1"


def test_new_task_with_run_at_in_the_future_waits() -> None:
    assert new(run_at=later(60)).date_next_process == later(60)


def test_new_task_with_run_at_in_the_past_is_due_now() -> None:
    assert new(run_at=NOW - timedelta(days=1)).date_next_process == NOW


def test_new_task_run_at_in_another_timezone_compares_by_instant() -> None:
    run_at = datetime(2024, 5, 17, 15, 30, 45, 123000, tzinfo=timezone(timedelta(hours=3)))
    assert new(run_at=run_at).date_next_process == NOW


# --- claim --------------------------------------------------------------------


def test_claim() -> None:
    task = transitions.claim(new(), later(1), NODE)
    assert task.status is PR
    assert task.attempts == 1
    assert task.node_identity == NODE
    assert task.date_next_process is None
    assert task.date_modified == later(1)
    assert task.date_created == NOW


def test_claim_again_after_a_failed_attempt_counts_and_clears_progress() -> None:
    task = transitions.report_progress(claimed(), 0.5, later(2))
    task = transitions.fail_attempt(task, error(), later(3))
    task = transitions.claim(task, later(10), "other-node")
    assert task.attempts == 2
    assert task.node_identity == "other-node"
    assert task.progress is None
    assert task.error == error()  # kept until success


# --- succeed ------------------------------------------------------------------


def test_succeed() -> None:
    task = transitions.fail_attempt(claimed(), error(), later(2))
    task = transitions.claim(task, later(8), NODE)
    done = transitions.succeed(task, RESULT, later(9))
    assert done.status is S
    assert done.result == {"answer": 42}
    assert done.error is None
    assert done.date_completed == later(9)
    assert done.date_modified == later(9)
    assert done.date_next_process is None
    assert done.attempts == 2


@pytest.mark.parametrize(
    ("retain_for", "retain_until"),
    [(60.0, later(2 + 60)), (0.0, later(2)), (None, None), (0.5, later(2.5))],
)
def test_succeed_sets_retention(retain_for: float | None, retain_until: datetime | None) -> None:
    done = transitions.succeed(claimed(retain_for=retain_for), RESULT, later(2))
    assert done.date_retain_until == retain_until


def test_retain_for_zero_is_invisible_at_once() -> None:
    done = transitions.succeed(claimed(retain_for=0.0), RESULT, later(2))
    assert transitions.is_visible(done, later(1))
    assert not transitions.is_visible(done, later(2))


# --- fail_attempt -------------------------------------------------------------


def test_fail_attempt_with_retries_remaining() -> None:
    task = transitions.fail_attempt(claimed(retry_count=3, retry_interval=5.0), error(), later(2))
    assert task.status is P
    assert task.retries_remaining == 2
    assert task.date_next_process == later(2 + 5)
    assert task.error == error()
    assert task.date_modified == later(2)
    assert task.date_completed is None
    assert task.date_retain_until is None
    assert task.attempts == 1
    assert task.node_identity == NODE


def test_fail_attempt_with_retry_forever_keeps_none() -> None:
    task = claimed(retry_count=None, retry_interval=1.0)
    for attempt in range(1, 6):
        task = transitions.fail_attempt(task, error(f"attempt {attempt}"), later(10 * attempt))
        assert task.status is P
        assert task.retries_remaining is None
        assert task.date_next_process == later(10 * attempt + 1)
        assert task.error == error(f"attempt {attempt}")
        task = transitions.claim(task, later(10 * attempt + 1), NODE)
        assert task.attempts == attempt + 1


def test_fail_attempt_with_a_due_time_keeps_it_instead_of_the_retry_interval() -> None:
    task = transitions.fail_attempt(
        claimed(retry_count=3, retry_interval=5.0), error(), later(9), due=NOW
    )
    assert task.status is P
    assert task.date_next_process == NOW
    assert task.retries_remaining == 2
    assert task.date_modified == later(9)
    ended = transitions.fail_attempt(claimed(retry_count=0), error(), later(9), due=NOW)
    assert ended.status is F
    assert ended.date_next_process is None


def test_fail_attempt_with_no_retry_left() -> None:
    task = transitions.fail_attempt(claimed(retry_count=0, retain_for=30.0), error(), later(2))
    assert task.status is F
    assert task.retries_remaining == 0
    assert task.error == error()
    assert task.date_completed == later(2)
    assert task.date_modified == later(2)
    assert task.date_retain_until == later(32)
    assert task.date_next_process is None


def test_retry_count_n_gives_n_plus_one_attempts() -> None:
    task = new(retry_count=3)
    statuses = []
    for step in range(10):
        task = transitions.claim(task, later(step * 10), NODE)
        task = transitions.fail_attempt(task, error(), later(step * 10 + 1))
        statuses.append(task.status)
        if task.status is F:
            break
    assert statuses == [P, P, P, F]
    assert task.attempts == 4


def test_fail_attempt_with_zero_interval_is_due_at_once() -> None:
    task = transitions.fail_attempt(claimed(retry_interval=0.0), error(), later(2))
    assert task.date_next_process == later(2)


def test_computed_dates_stay_millisecond_exact() -> None:
    task = claimed(retry_interval=0.0015, retain_for=0.0015)
    failed = transitions.fail_attempt(task, error(), later(2))
    done = transitions.succeed(task, RESULT, later(2))
    assert failed.date_next_process is not None
    assert done.date_retain_until is not None
    assert failed.date_next_process.microsecond % 1000 == 0
    assert done.date_retain_until.microsecond % 1000 == 0


# --- cancel -------------------------------------------------------------------


@pytest.mark.parametrize("terminate", [False, True])
def test_cancel_pending(terminate: bool) -> None:
    task = transitions.cancel(
        new(retain_for=10.0, run_at=later(100)), later(1), terminate=terminate
    )
    assert task.status is C
    assert task.date_cancelled == later(1)
    assert task.date_modified == later(1)
    assert task.date_next_process is None
    assert task.date_retain_until == later(11)
    assert task.date_completed is None
    assert task.attempts == 0


def test_cancel_processing_needs_terminate() -> None:
    task = claimed(retain_for=None)
    with pytest.raises(Blocked):
        transitions.cancel(task, later(2))
    cancelled = transitions.cancel(task, later(2), terminate=True)
    assert cancelled.status is C
    assert cancelled.date_cancelled == later(2)
    assert cancelled.date_retain_until is None  # kept forever
    assert cancelled.attempts == 1


def test_cancel_with_retain_for_zero_is_invisible_at_once() -> None:
    task = transitions.cancel(new(retain_for=0.0), later(1))
    assert not transitions.is_visible(task, later(1))


# --- retry --------------------------------------------------------------------


def test_retry_of_a_waiting_pending_task_makes_it_due_now() -> None:
    waiting = transitions.fail_attempt(claimed(retry_interval=3600.0), error(), later(2))
    assert waiting.date_next_process == later(3602)
    task = transitions.retry(waiting, later(5))
    assert task.status is P
    assert task.date_next_process == later(5)
    assert task.date_modified == later(5)
    assert task.retries_remaining == waiting.retries_remaining
    assert task.attempts == waiting.attempts


def test_retry_of_a_scheduled_task_makes_it_due_now() -> None:
    assert transitions.retry(new(run_at=later(600)), later(1)).date_next_process == later(1)


def test_retry_of_a_failed_task_revives_it_for_one_more_attempt() -> None:
    failed = transitions.fail_attempt(claimed(retry_count=0, retain_for=60.0), error(), later(2))
    task = transitions.retry(failed, later(30))
    assert task.status is P
    assert task.date_next_process == later(30)
    assert task.date_completed is None
    assert task.date_retain_until is None
    assert task.date_modified == later(30)
    assert task.error == error()
    assert task.attempts == 1
    assert transitions.is_visible(task, later(10_000))
    # one more attempt: failing it again is final again
    again = transitions.fail_attempt(transitions.claim(task, later(31), NODE), error(), later(32))
    assert again.status is F
    assert again.attempts == 2
    assert again.date_retain_until == later(92)


# --- report_progress ----------------------------------------------------------


def test_report_progress() -> None:
    task = transitions.report_progress(claimed(), 0.25, later(2))
    assert task.progress == 0.25
    assert task.date_modified == later(2)
    assert task.status is PR


# --- the full Blocked matrix --------------------------------------------------

TRANSITIONS: dict[str, tuple[Callable[[BackgroundTask], BackgroundTask], set[TaskStatus]]] = {
    "claim": (lambda t: transitions.claim(t, later(5), NODE), {P}),
    "succeed": (lambda t: transitions.succeed(t, RESULT, later(5)), {PR}),
    "fail_attempt": (lambda t: transitions.fail_attempt(t, error(), later(5)), {PR}),
    "cancel": (lambda t: transitions.cancel(t, later(5)), {P}),
    "cancel_terminate": (lambda t: transitions.cancel(t, later(5), terminate=True), {P, PR}),
    "retry": (lambda t: transitions.retry(t, later(5)), {P, F}),
    "report_progress": (lambda t: transitions.report_progress(t, 0.5, later(5)), {PR}),
}


@pytest.mark.parametrize("status", list(TaskStatus))
@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_each_transition_applies_only_to_its_statuses(name: str, status: TaskStatus) -> None:
    apply, allowed = TRANSITIONS[name]
    task = in_status(status)
    assert task.status is status
    if status in allowed:
        after = apply(task)
        assert after.date_modified == later(5)
        assert after.id == task.id
    else:
        with pytest.raises(Blocked) as info:
            apply(task)
        assert info.value.args == (status,)


# --- is_visible ---------------------------------------------------------------


@pytest.mark.parametrize("status", [P, PR])
def test_unfinished_tasks_are_always_visible(status: TaskStatus) -> None:
    task = in_status(status, retain_for=0.0)
    assert task.date_retain_until is None
    assert transitions.is_visible(task, later(10**6))


def test_visibility_ends_exactly_at_retain_until() -> None:
    task = in_status(S, retain_for=60.0)
    assert task.date_retain_until == later(62)
    assert transitions.is_visible(task, later(61.999))
    assert not transitions.is_visible(task, later(62))
    assert not transitions.is_visible(task, later(63))


def test_forever_is_always_visible() -> None:
    task = in_status(F, retain_for=None)
    assert transitions.is_visible(task, datetime(9999, 1, 1, tzinfo=UTC))


# --- property: the status machine ---------------------------------------------

SPEC_EDGES = {
    (P, PR),  # claim
    (PR, S),  # succeed
    (PR, P),  # fail with retries left
    (PR, F),  # fail with none left
    (P, C),  # cancel
    (PR, C),  # cancel(terminate=True)
    (F, P),  # retry
    (P, P),  # retry of a waiting task
    (PR, PR),  # progress
}
ACTIONS = ("claim", "succeed", "fail", "cancel", "terminate", "retry", "progress")


def drive(task: BackgroundTask, action: str, now: datetime) -> BackgroundTask:
    if action == "claim":
        return transitions.claim(task, now, NODE)
    if action == "succeed":
        return transitions.succeed(task, RESULT, now)
    if action == "fail":
        return transitions.fail_attempt(task, TaskError(type="E", message="m"), now)
    if action == "cancel":
        return transitions.cancel(task, now)
    if action == "terminate":
        return transitions.cancel(task, now, terminate=True)
    if action == "retry":
        return transitions.retry(task, now)
    return transitions.report_progress(task, 0.5, now)


@settings(max_examples=300, deadline=None)
@given(
    retry_count=st.none() | st.integers(0, 4),
    retain_for=st.none() | st.integers(0, 3600).map(float),
    steps=st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 10_000)), max_size=30),
)
def test_status_machine_property(
    retry_count: int | None, retain_for: float | None, steps: list[tuple[str, int]]
) -> None:
    task = new(retry_count=retry_count, retain_for=retain_for)
    now = NOW
    revivals = 0
    for action, step_ms in steps:
        now += timedelta(milliseconds=step_ms)
        try:
            after = drive(task, action, now)
        except Blocked:
            continue
        before = task
        task = after
        assert (before.status, task.status) in SPEC_EDGES, (action, before.status, task.status)
        assert before.status not in (S, C), "a success or cancelled task moved"
        assert task.attempts >= before.attempts
        assert task.attempts - before.attempts == (1 if action == "claim" else 0)
        assert task.date_modified == now
        assert task.date_created == NOW
        # record invariants of contract.md#task-model
        assert (task.date_next_process is not None) == (task.status is P)
        assert (task.date_completed is not None) == (task.status in (S, F))
        if not task.status.is_final or retain_for is None:
            assert task.date_retain_until is None
        else:
            assert task.date_retain_until == now + timedelta(seconds=retain_for)
        if task.status is S:
            assert task.error is None
            assert task.result == {"answer": 42}
        if retry_count is not None:
            assert task.retries_remaining is not None
            assert 0 <= task.retries_remaining <= retry_count
        else:
            assert task.retries_remaining is None
        if (before.status, task.status) == (F, P):
            revivals += 1
        if retry_count is not None:
            assert task.attempts <= retry_count + 1 + revivals
    if task.status in (S, C):
        frozen = attrs.evolve(task)
        for action in ACTIONS:
            with pytest.raises(Blocked):
                drive(frozen, action, now + timedelta(seconds=1))
