"""Dispatch planning: which task types to claim for each turn, and where the attempts run.

The planner only decides; the reactor claims (in its group commit), starts workers and sends
attempts.  It keeps the "due hint" (the earliest due time among types that have room), so that
an idle reactor sleeps exactly until the next task is due instead of polling the store.

Fairness rules: a freed slot goes first to the type with the fewest workers; the workers planned
in one turn never exceed ``max_total_workers`` together; and when every slot is taken, an idle
worker stops, or the busiest type retires one worker, so that no type starves behind another's
backlog.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence, Sized
from datetime import datetime

from taskengine.core import errors
from taskengine.pool import pool, process
from taskengine.stores import base

__all__ = ["Plan", "Planner"]

State = process.WorkerState
#: Per task type, the slots its claimed attempts go to, best first (None: a new worker).
Plan = list[tuple[str, list[process.WorkerProcess | None]]]


def _level_order(
    levels: list[tuple[process.WorkerProcess, int, int]],
) -> list[process.WorkerProcess]:
    """Slots ``(worker, first, last)`` in order of the queue length they bring their worker to.

    Equal lengths keep the workers' order.  Between two consecutive bounds the same workers
    take turns, so each stretch is one repeated pattern: this costs a few list operations per
    worker rather than one sort key per slot (it runs on every dispatch).
    """
    bounds = sorted({bound for _, first, last in levels for bound in (first, last + 1)})
    order: list[process.WorkerProcess] = []
    for low, high in itertools.pairwise(bounds):
        turn = [w for w, first, last in levels if first <= low and high - 1 <= last]
        order += turn * (high - low)
    return order


class Planner:
    """Plans the claims of one reactor (runs on the reactor thread only)."""

    def __init__(
        self,
        pools: dict[str, pool.WorkerPool],
        store: base.TaskStore,
        max_total_workers: int,
        on_store_error: Callable[[str], None],
    ) -> None:
        self._pools = pools
        self._store = store
        self._max_total = max_total_workers
        self._on_store_error = on_store_error
        self._rotation = 0
        # Each type's next due time, as last read from the store (or "now" after a full claim).
        self._due: dict[str, datetime | None] = {}
        #: The earliest due time among types with room (None: nothing due, or no room).
        self.due_hint: datetime | None = None

    def total_live(self) -> int:
        """Workers alive (or starting) across every pool."""
        return sum(len(each.workers) for each in self._pools.values())

    def slots(
        self, each: pool.WorkerPool, live: int | None = None
    ) -> list[process.WorkerProcess | None]:
        """Where the next claimed attempts of a pool go, best first (None: a new worker).

        Idle workers first, then new workers, then prefetch slots of busy workers, so that an
        attempt never queues behind another while a worker could run it at once.  Prefetch
        slots are filled level by level: each goes to the worker that would then hold the
        fewest attempts, so a claim of fewer tasks than slots spreads them over the workers
        (each gets its fair share) instead of filling the first worker's pipe.  ``live``
        counts the workers alive or already planned across every pool, so that the new workers
        of one turn never exceed ``max_total_workers`` together.
        """
        room = {w: each.depth(w) for w in each.workers}
        idle = [w for w in each.workers if w.state is State.IDLE and room[w]]
        total = self.total_live() if live is None else live
        fresh: list[process.WorkerProcess | None] = [None] * each.spawnable(total, self._max_total)
        # Worker w's prefetch slots bring it to queue lengths first..last.
        levels = [(w, len(w.queue) + 1 + (w in idle), len(w.queue) + room[w]) for w in each.workers]
        return [*idle, *fresh, *_level_order([level for level in levels if level[1] <= level[2]])]

    def next_due(self, types: list[str]) -> datetime | None:
        """The store's earliest due time for ``types`` (None on a store error, reported)."""
        return self._look_up(types)[1]

    def _look_up(self, types: list[str]) -> tuple[bool, datetime | None]:
        """Whether the store answered (a failure is reported), and its earliest due time."""
        if not types:
            return True, None
        try:
            return True, self._store.next_due(types)
        except errors.StoreError:
            self._on_store_error("looking for due tasks")
            return False, None

    def knows_all(self) -> bool:
        """Whether the next due time of every pool's type is known without asking the store.

        When it is, a worker that frees a slot needs no store round trip: the due hint already
        says whether (and when) there is work for it.
        """
        return all(name in self._due for name in self._pools)

    def note_due(self, task_type: str, due: datetime) -> bool:
        """New work of ``task_type`` is due at ``due`` (created here); False: refresh instead.

        A type whose due time is known just takes the earlier of the two, so that a create
        costs the loop no store query.  An unknown type needs the full refresh.
        """
        if task_type not in self._pools:
            return True  # no pool: nothing to claim for until a registration (which refreshes)
        if task_type not in self._due:
            return False
        known = self._due[task_type]
        if known is None or due < known:
            self._due[task_type] = due
            self._update_hint()
        return True

    def _remember(self, types: list[str]) -> None:
        """Read the due times of ``types`` again; a type whose read fails becomes unknown."""
        for name in types:
            answered, due = self._look_up([name])
            if answered:
                self._due[name] = due
            else:
                self._due.pop(name, None)

    def _has_room(self, each: pool.WorkerPool) -> bool:
        """Whether a claim for ``each`` could place an attempt now (``slots`` is not empty)."""
        if each.spawnable(self.total_live(), self._max_total):
            return True
        return any(each.depth(w) for w in each.workers)

    def plan(self, now: datetime, *, refresh: bool) -> tuple[Plan, list[process.WorkerProcess]]:
        """This turn's claims, and the idle workers to stop to make room for due work.

        ``refresh`` asks the store again for each type's due time (something changed since).
        Only types with due work get slots: a type with nothing due must not hold back the
        new workers another type could start.
        """
        if not self._pools:
            self._due.clear()
            self.due_hint = None
            return [], []
        to_stop: list[process.WorkerProcess] = []
        if refresh:
            self._due = {}
            self._remember([name for name, each in self._pools.items() if self._has_room(each)])
            self._update_hint()
            if self.due_hint is None or self.due_hint > now:
                to_stop = self._relieve_starvation(now)
        if self.due_hint is None or self.due_hint > now:
            return [], to_stop
        due_now = [name for name, due in self._due.items() if due is not None and due <= now]
        self._rotation = (self._rotation + 1) % max(1, len(due_now))
        rotated = due_now[self._rotation :] + due_now[: self._rotation]
        plan: Plan = []
        live = self.total_live()  # grows with the workers this plan will start
        # Types with the fewest workers choose first, so a freed slot goes to a starved type.
        for task_type in sorted(rotated, key=lambda name: len(self._pools[name].workers)):
            each = self._pools.get(task_type)
            slots = [] if each is None else self.slots(each, live)
            live += slots.count(None)
            if slots:
                plan.append((task_type, slots))
            else:
                # No room: its due time is forgotten, so that a slot freeing up refreshes it.
                self._due.pop(task_type, None)
        if len(plan) < len(due_now):
            self._update_hint()
            # Due work found no room: another type may be holding every worker.
            to_stop = to_stop + self._relieve_starvation(now)
        return plan, to_stop

    def settle(self, plan: Plan, claimed: Sequence[Sized], now: datetime) -> None:
        """Account for what the claims of ``plan`` got.

        A type whose claim filled every slot probably has more due work: it stays due.  A
        type that got fewer tasks than slots has nothing due now; its next due time (a later
        ``run_at``, a retry) is read at once, in this turn, rather than in a turn of its own.
        """
        short = []
        for (task_type, slots), tasks in zip(plan, claimed, strict=True):
            if len(tasks) == len(slots):
                self._due[task_type] = now
            else:
                short.append(task_type)
        self._remember(short)
        self._update_hint()

    def _update_hint(self) -> None:
        times = [due for due in self._due.values() if due is not None]
        self.due_hint = min(times) if times else None

    def _relieve_starvation(self, now: datetime) -> list[process.WorkerProcess]:
        """With every worker slot taken, make room for types that have due work.

        An idle worker is wasted capacity then: it is returned to be stopped at once.  A type
        with due work and no worker at all is starving: the busiest type retires one worker
        after its attempt, so no type waits for another's backlog to drain.
        """
        if self.total_live() < self._max_total:
            return []
        wanting = [
            task_type
            for task_type, each in self._pools.items()
            if not each.draining and len(each.workers) < each.spec.max_worker_count
        ]
        due = self.next_due(wanting)
        if due is None or due > now:
            return []
        workers = [w for each in self._pools.values() for w in each.workers]
        idle = [w for w in workers if w.state is State.IDLE]
        if idle:
            return idle[:1]
        starving = [t for t in wanting if not self._pools[t].workers]
        if not starving or self.next_due(starving) is None:
            return []
        others = [w for w in workers if w.config.task_type not in starving]
        if any(w.retire_after_task for w in others):
            return []
        busiest = max(self._pools.values(), key=lambda each: len(each.workers))
        for worker in busiest.workers:
            if worker.state in (State.BUSY, State.STARTING) and not worker.retire_after_task:
                worker.retire_after_task = True
                break
        return []
