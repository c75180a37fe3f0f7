"""Which attempts that have not started move from a crowded worker to one with room.

Prefetching is sized from earlier run times, so a change of run time (short attempts, then
long ones) can leave attempts queued behind a long one while another worker of the type has
nothing to do.  A worker then takes half the difference from the worker with the most attempts
waiting: the supervisor moves those still held in the coordinator at once, and takes those
already in the busy worker's pipe back through its revocation ledger (``ledger.py``), which
needs nothing from the busy worker, however its handler holds the GIL.  An idle worker always
takes; a busy one only when the difference is worth more than ``pool.PREFETCH_BUDGET`` of work
at the type's mean run time, so a stream of short attempts does not churn.
"""

from __future__ import annotations

from collections.abc import Iterator

from taskengine.pool import pool, process

__all__ = ["moves"]

State = process.WorkerState


def moves(
    each: pool.WorkerPool,
) -> Iterator[tuple[process.WorkerProcess, process.WorkerProcess, int]]:
    """(donor, thief, how many) for each move ``each`` needs, least busy thief first.

    Lazy: the caller makes each move before asking for the next, which is computed from the
    books as the previous move left them.
    """
    thieves = [
        w
        for w in each.workers
        if w.state in (State.IDLE, State.BUSY) and each.is_current(w) and not w.retire_after_task
    ]
    for thief in sorted(thieves, key=lambda w: w.load()):
        donor = max(each.workers, key=lambda w: w.unstarted())
        take = min((donor.unstarted() - thief.load()) // 2, each.depth(thief))
        if take < 1:
            return
        if thief.state is State.BUSY and take * (each.mean_run_time or 0.0) < pool.PREFETCH_BUDGET:
            continue
        yield donor, thief, take
