"""Fair dispatch: no worker idles while another holds an attempt that has not started.

Instant attempts teach a pool to prefetch deeply; the tests then change the run time under it
(short then long, one long among many short, a bimodal mix).  Long attempts are held by gates
(``tests.handlers.timed.busy`` with a gate), so what is checked does not depend on the
machine's speed: attempts queued behind a held one must run elsewhere while it is still held.
Makespans are checked against the bound of any schedule that never leaves a worker idle while
work waits (total work / workers + the longest attempt), from the run times the handlers
measured themselves; the distribution over workers is checked too.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import taskengine
from taskengine.core import codec
from tests.conftest import until

Run = tuple[int, float, float]  # (pid, start, end) as the handler saw them


class Held:
    """A long attempt: it spins until the test opens its gate."""

    def __init__(self, directory: Path, name: str) -> None:
        self.started = directory / f"{name}.started"
        self.gate = directory / f"{name}.gate"

    def payload(self) -> dict[str, Any]:
        return {"started": str(self.started), "gate": str(self.gate)}

    def is_running(self) -> bool:
        return self.started.exists()

    def release(self) -> None:
        self.gate.touch()


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Callable[[str], Held]]:
    """Factory of held attempts; every gate is opened at the end."""
    made: list[Held] = []

    def make(name: str) -> Held:
        made.append(Held(tmp_path, name))
        return made[-1]

    yield make
    for each in made:  # never leave a worker spinning until its 30 s limit
        each.release()


def warm(engine: taskengine.TaskEngine, workers: int = 2) -> None:
    """Start ``workers`` workers of type ``spin`` and teach the pool a tiny run time.

    Attempts of 0.2 s make every worker start; instant ones then bring the pool's mean run
    time down to microseconds, so that it prefetches as deeply as it ever does.
    """
    engine.register_handler("spin", "tests.handlers.timed", "busy", max_worker_count=workers)
    for task_id in engine.create_many("spin", [{"seconds": 0.2}] * workers):
        engine.wait(task_id, timeout=60)
    for task_id in engine.create_many("spin", [{"seconds": 0}] * 50):
        engine.wait(task_id, timeout=20)


def outcome(engine: taskengine.TaskEngine, task_id: str) -> Run:
    done = engine.wait(task_id, timeout=60)
    assert done.status is taskengine.TaskStatus.SUCCESS, done.error
    assert done.result_blob is not None
    pid, start, end = codec.decode(done.result_blob)
    return pid, start, end


def assert_still_first_attempt(engine: taskengine.TaskEngine, *task_ids: str) -> None:
    """Held attempts are still running their first attempt (none gave up and ran again)."""
    for task_id in task_ids:
        task = engine.get(task_id)
        assert task is not None
        assert task.status is taskengine.TaskStatus.PROCESSING, task
        assert task.attempts == 1, task


def assert_work_conserving(runs: list[Run], workers: int) -> None:
    """The makespan stays within the bound of a schedule that never idles a worker."""
    work = sum(end - start for _, start, end in runs)
    longest = max(end - start for _, start, end in runs)
    makespan = max(end for *_, end in runs) - min(start for _, start, _ in runs)
    # Dispatching costs a little per attempt, and the machine is shared: 5 ms each + 0.3 s.
    bound = work / workers + longest + 0.3 + 0.005 * len(runs)
    assert makespan <= bound, (makespan, work, longest, bound)


@pytest.mark.parametrize("one_by_one", [False, True], ids=["create_many", "create-loop"])
def test_heavy_batch_after_instant_attempts_uses_every_worker(
    engine: taskengine.TaskEngine, one_by_one: bool
) -> None:
    """The issue's case: after instant attempts, 40 attempts of 50 ms run on both workers."""
    warm(engine)
    if one_by_one:
        ids = [engine.create("spin", {"seconds": 0.05}) for _ in range(40)]
    else:
        ids = engine.create_many("spin", [{"seconds": 0.05}] * 40)
    runs = [outcome(engine, task_id) for task_id in ids]
    per_worker = Counter(pid for pid, *_ in runs)
    assert len(per_worker) == 2, per_worker
    assert max(per_worker.values()) <= 24, per_worker  # 20 each, give or take a steal
    assert_work_conserving(runs, 2)


def test_short_attempts_queued_behind_a_long_one_run_elsewhere(
    engine: taskengine.TaskEngine, held: Callable[[str], Held]
) -> None:
    """One long attempt among many short ones: every short one finishes while it runs."""
    warm(engine)
    long_one = held("long")
    # One batch: the long attempt and half of the short ones go to the same worker.
    ids = engine.create_many("spin", [long_one.payload(), *[{"seconds": 0.01}] * 40])
    until(long_one.is_running, timeout=20)
    runs = [outcome(engine, task_id) for task_id in ids[1:]]
    assert_still_first_attempt(engine, ids[0])  # they finished while it ran
    long_pid = int(long_one.started.read_text())
    assert all(pid != long_pid for pid, *_ in runs)
    long_one.release()
    outcome(engine, ids[0])


def test_long_attempts_after_short_ones_never_wait_behind_each_other(
    engine: taskengine.TaskEngine, held: Callable[[str], Held]
) -> None:
    """Short attempts, then long ones: a worker that frees up takes a queued long attempt."""
    warm(engine)
    longs = [held(f"long{n}") for n in range(4)]
    ids = engine.create_many("spin", [each.payload() for each in longs])
    task_of = dict(zip(longs, ids, strict=True))
    # Two run and two wait, one behind each (the pool prefetches deeply).
    until(lambda: sum(each.is_running() for each in longs) == 2, timeout=20)
    running = [each for each in longs if each.is_running()]
    waiting = [each for each in longs if not each.is_running()]
    running[1].release()
    # The worker that freed up runs a waiting one, whichever worker's queue it was in...
    until(lambda: sum(each.is_running() for each in waiting) == 1, timeout=20)
    assert_still_first_attempt(engine, task_of[running[0]])  # ...while the other is held.
    started = next(each for each in waiting if each.is_running())
    started.release()
    until(lambda: all(each.is_running() for each in waiting), timeout=20)
    assert_still_first_attempt(engine, task_of[running[0]])
    for each in longs:
        each.release()
    runs = [outcome(engine, task_id) for task_id in ids]
    assert len({pid for pid, *_ in runs}) == 2


def test_bimodal_mix_keeps_every_worker_busy(
    store: taskengine.stores.TaskStore, held: Callable[[str], Held]
) -> None:
    """A bimodal mix on 3 workers: while two are held by long attempts, the third runs the
    short ones, and a timed mix keeps to the bound of a schedule that never idles."""
    engine = taskengine.TaskEngine(store, max_total_workers=3).start()
    try:
        check_bimodal_mix(engine, held)
    finally:
        engine.stop(timeout=10)


def check_bimodal_mix(engine: taskengine.TaskEngine, held: Callable[[str], Held]) -> None:
    warm(engine, workers=3)
    longs = [held("a"), held("b")]
    shuffled: list[dict[str, Any]] = [each.payload() for each in longs]
    shuffled += [{"seconds": 0.005}] * 30
    random.Random(7).shuffle(shuffled)
    ids = engine.create_many("spin", shuffled)
    until(lambda: all(each.is_running() for each in longs), timeout=20)
    short_ids = [task_id for task_id, p in zip(ids, shuffled, strict=True) if "gate" not in p]
    for task_id in short_ids:
        outcome(engine, task_id)  # finishes while both long attempts are held
    assert_still_first_attempt(
        engine, *(i for i, p in zip(ids, shuffled, strict=True) if "gate" in p)
    )
    for each in longs:
        each.release()
    for task_id in ids:
        outcome(engine, task_id)
    timed = [{"seconds": 0.1 if n % 10 == 0 else 0.005} for n in range(100)]
    random.Random(11).shuffle(timed)
    runs = [outcome(engine, task_id) for task_id in engine.create_many("spin", timed)]
    assert len({pid for pid, *_ in runs}) == 3
    assert_work_conserving(runs, 3)
