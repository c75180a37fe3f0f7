"""Dispatch: claim due tasks for free workers, turn outcomes into task changes, store them.

This is the only part of the loop that talks to the store (as Dramatiq's consumer is the only
part of its worker that talks to the broker).  Each turn it takes the outcomes the supervisor
reported (``pool/outcomes.py``), turns each into a transition of its task (``transitions``),
and writes them together with the turn's claims in one group commit (``writer.commit``); the
claimed attempts then go to the supervisor's workers.  When the store fails it holds the
outcomes and retries with a backoff; after a commit that raised it reconciles what landed
(faults.md#fault-30).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Final

from taskengine.coordinator import planner, writer
from taskengine.core import clock, errors, models, transitions
from taskengine.pool import outcomes, supervisor
from taskengine.stores import base

__all__ = ["Dispatch"]

log = logging.getLogger(__name__)

Status = models.TaskStatus

#: First and largest pause after a store error before writing again.
STORE_RETRY_FIRST: Final = 0.05
STORE_RETRY_MAX: Final = 5.0


class Dispatch:
    """The store side of the loop: claims, outcomes, group commits, backoff and reconcile."""

    def __init__(
        self,
        *,
        store: base.TaskStore,
        task_writer: writer.TaskWriter,
        clock_: clock.Clock,
        node_identity: str,
        workers: supervisor.Supervisor,
        max_total_workers: int,
    ) -> None:
        self._store = store
        self._writer = task_writer
        self._clock = clock_
        self._node = node_identity
        self._workers = workers
        self.planner = planner.Planner(workers.pools, store, max_total_workers, self._store_failed)
        #: Changes waiting for the next commit (outcomes, hand-backs, progress).
        self.batch: list[writer.Change] = []
        #: Whether to ask the store for due work on the next turn.
        self.dirty = True
        #: Monotonic time before which the store is not written again (backoff).
        self.retry_at = 0.0
        self._backoff = 0.0
        self._unsure = False  # a commit raised: it may have landed all the same

    def mark_unsure(self) -> None:
        """A dispatch failed half way: a claimed task may be held by no worker.

        The next commit's check hands such tasks back (as after a commit that raised).
        """
        self._unsure = self.dirty = True

    # -- outcomes -------------------------------------------------------------------------

    def collect(self) -> None:
        """Turn the supervisor's outcomes into changes for the next commit."""
        reported = self._workers.outcomes
        if not reported:
            return
        self._workers.outcomes = []
        now = self._clock.now()
        # A progress report and the end of the same attempt can arrive in one turn: the end
        # builds on the record with the progress (the supervisor had already let go of it).
        latest: dict[str, models.BackgroundTask] = {}
        for outcome in reported:
            task = latest.pop(outcome.task.id, outcome.task)
            if isinstance(outcome, outcomes.Finished):
                if outcome.error is None:
                    assert outcome.result_blob is not None
                    new = transitions.succeed(task, outcome.result_blob, now)
                else:
                    new = transitions.fail_attempt(task, outcome.error, now)
                self.batch.append(writer.change_for(task, new))
            elif isinstance(outcome, outcomes.Failed):
                self.fail(task, outcome.error, now)
            elif isinstance(outcome, outcomes.Unstarted):
                self.release(task, now)
            else:
                latest[task.id] = self._progress(task, outcome, now)

    def _progress(
        self, task: models.BackgroundTask, report: outcomes.Progressed, now: datetime
    ) -> models.BackgroundTask:
        if report.message is not None:
            log.info(
                "task %s progress %.0f%%: %s",
                task.id,
                report.fraction * 100,
                report.message,
                extra={"task_id": task.id, "task_type": task.type, "node": self._node},
            )
        new = transitions.report_progress(task, report.fraction, now)
        self._workers.replace_task(new)
        self.batch.append(
            writer.Change(
                write=base.Update(
                    task=new, expected_status=task.status, expected_attempts=task.attempts
                ),
                task=new,
                status_changed=False,
            )
        )
        return new

    def fail(self, task: models.BackgroundTask, error: models.TaskError, now: datetime) -> None:
        """Count a failed attempt of ``task``."""
        self.batch.append(writer.change_for(task, transitions.fail_attempt(task, error, now)))

    def release(self, task: models.BackgroundTask, now: datetime) -> None:
        """Hand back a claimed attempt that never started (no attempt counted)."""
        self.batch.append(writer.change_for(task, transitions.release(task, now)))

    def held_ids(self) -> set[str]:
        """Ids of the claims held here: run or queued by workers, or waiting for the store."""
        self.collect()
        held = self._workers.held_ids()
        held.update(change.task.id for change in self.batch if change.task is not None)
        return held

    # -- the commit of a turn -------------------------------------------------------------

    def run(self, *, start_workers: bool = True) -> None:
        """Claim attempts for free slots and store this turn's outcomes: one group commit.

        Without ``start_workers`` the plan keeps only slots of running workers; if it had
        more, ``dirty`` stays set so that the loop's next turn plans (and starts) them.
        """
        self.collect()
        if time.monotonic() < self.retry_at:
            return
        now = self._clock.now()
        plan, to_stop = self.planner.plan(now, refresh=self.dirty)
        self.dirty = False
        if not start_workers:
            self.dirty = any(None in slots for _, slots in plan)
            running: planner.Plan = [
                (name, [slot for slot in slots if slot is not None]) for name, slots in plan
            ]
            plan = [(name, kept) for name, kept in running if kept]
        for idle in to_stop:
            self._workers.send_stop(idle)
        if not plan and not self.batch:
            if self._unsure:
                # No commit comes to check after the one that raised: check now.
                self._reconcile([], [])
            return
        batch, self.batch = self.batch, []
        try:
            applied, claimed = self._writer.commit(
                batch,
                [(task_type, len(slots)) for task_type, slots in plan],
                now,
                transitions.Claim(now, self._node),
            )
        except errors.StoreError:
            self.batch = batch + self.batch
            self._unsure = True
            self._store_failed(f"storing {len(batch)} outcome(s) and claiming due tasks")
            return
        self._store_ok()
        self._hand_out(plan, claimed, now)
        self.planner.settle(plan, claimed, now)
        if any(c.task is not None and c.task.status is Status.PENDING for c in batch):
            self.dirty = True  # a retry or a hand-back may be due sooner than the hint
        if self._unsure:
            self._reconcile(batch, applied)

    def _hand_out(
        self,
        plan: planner.Plan,
        claimed: list[list[models.BackgroundTask]],
        now: datetime,
    ) -> None:
        for (task_type, slots), tasks in zip(plan, claimed, strict=True):
            each = self._workers.pools[task_type]
            for task, slot in zip(tasks, slots, strict=False):
                worker = slot if slot is not None else self._workers.start_worker(each)
                if worker is None:
                    error = models.TaskError.of(
                        errors.WorkerInitError, "could not start a worker process"
                    )
                    self.fail(task, error, now)
                else:
                    self._workers.run_on(worker, task)
        self.collect()  # a send to a worker that died meanwhile handed attempts back

    def flush(self) -> None:
        """Store held outcomes without claiming (while stopping)."""
        self.collect()
        if not self.batch or time.monotonic() < self.retry_at:
            return
        batch, self.batch = self.batch, []
        try:
            applied = self._writer.apply(batch)
        except errors.StoreError:
            self.batch = batch + self.batch
            self._unsure = True
            self._store_failed(f"storing {len(batch)} outcome(s)")
            return
        self._store_ok()
        if self._unsure:
            self._reconcile(batch, applied)

    def _reconcile(self, batch: list[writer.Change], applied: list[bool]) -> None:
        """After a commit that raised, find what it stored all the same.

        Its outcomes, written again, fail their fence: those the store holds are announced.
        Its claims reached no worker: tasks this node holds in processing that no worker runs
        are handed back uncounted.  A store error here leaves the check for the next commit.
        """
        try:
            landed = [
                change
                for change, ok in zip(batch, applied, strict=True)
                if not ok and change.task is not None and self._landed(change.task)
            ]
            held = self.held_ids()
            stranded = [
                task
                for task in self._store.processing()
                if task.node_identity == self._node and task.id not in held
            ]
        except errors.StoreError:
            return
        self._unsure = False
        self._writer.announce(landed)
        now = self._clock.now()
        for task in stranded:
            log.warning("task %s was claimed by a commit that reported an error; released", task.id)
            self.release(task, now)
            self.dirty = True

    def _landed(self, task: models.BackgroundTask) -> bool:
        stored = self._store.get(task.id)
        deleted = task.status.is_final and task.retain_for == 0  # see writer.change_for
        return stored is None if deleted else stored == task

    def nothing_held(self, stop_deadline: float) -> bool:
        """While stopping: whether no outcome is held back by a store error any more.

        At the stop deadline it gives up: the outcomes still held are logged, and their tasks
        keep their last stored state (a durable store's next start counts them as crashed).
        """
        self.collect()
        if not self.batch:
            return True
        if time.monotonic() < stop_deadline:
            return False
        held = sorted(
            {
                change.write.task.id
                if isinstance(change.write, base.Update)
                else change.write.task_id
                for change in self.batch
            }
        )
        log.error(
            "stopping with the outcomes of %d task(s) the task store did not take: %s",
            len(held),
            ", ".join(held),
        )
        return True

    # -- store health ---------------------------------------------------------------------

    def _store_ok(self) -> None:
        if self._backoff:
            log.warning(
                "the task store is writable again; held outcomes are stored",
                extra={"node": self._node},
            )
        self._backoff = 0.0
        self.retry_at = 0.0

    def _store_failed(self, what: str) -> None:
        if not self._backoff:
            log.error(
                "task store failed while %s; retrying with backoff",
                what,
                exc_info=True,
                extra={"node": self._node},
            )
        self._backoff = min(STORE_RETRY_MAX, max(STORE_RETRY_FIRST, self._backoff * 2))
        self.retry_at = time.monotonic() + self._backoff
