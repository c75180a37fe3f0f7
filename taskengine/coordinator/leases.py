"""Cluster duties of an engine on a shared store (``capabilities.shared``, e.g. PostgreSQL).

One thread per engine renews the leases of this node's claims every ``heartbeat_interval`` and,
every ``REAP_INTERVAL`` (or more often), re-queues the tasks of nodes whose lease ended: the
cut-short attempt counts and its error is ``WorkerCrashedError``, written through the engine's
fenced writer, so exactly one node's write applies and a late outcome of the lost attempt
changes nothing.  The store's LISTEN
thread wakes the reactor on new work and forwards terminations requested by other nodes.

A store that ties each claim to one run of a node (``ClaimTracking``; PostgresStore does) gets
more: only the attempts the reactor runs now have their leases renewed, the claims an earlier
run of this node identity left behind are expired as soon as the node starts, and a re-queued
attempt keeps the due time it had when it was claimed instead of going behind the backlog.

Single-node stores never get here, so MemoryStore and SqliteStore behave as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

from taskengine.coordinator import writer
from taskengine.core import clock, errors, models, transitions
from taskengine.stores import base

__all__ = ["ClaimTracking", "LeaseKeeper", "start_cluster_duties"]

log = logging.getLogger(__name__)

#: Expired claims re-queued per store call.
REAP_BATCH: Final = 200
#: Longest time between two looks for expired leases (seconds).
REAP_INTERVAL: Final = 2.0


@runtime_checkable
class ClaimTracking(Protocol):
    """Optional methods of a shared store whose claims name the run of the node that made them."""

    def renew_held_leases(self, node_identity: str, task_ids: Collection[str]) -> list[str]:
        """Extend the leases of this run's claims among ``task_ids``; return the ids renewed."""
        ...

    def expire_earlier_claims(self, node_identity: str) -> list[str]:
        """End the leases of ``node_identity``'s claims made by earlier runs; return their ids."""
        ...

    def expired_claims_with_due(
        self, limit: int
    ) -> list[tuple[models.BackgroundTask, datetime | None]]:
        """Processing tasks whose lease ended, each with its due time before it was claimed."""
        ...


class LeaseKeeper:
    """Renews this node's leases and re-queues expired ones on a thread."""

    def __init__(
        self,
        store: base.SharedTaskStore,
        task_writer: writer.TaskWriter,
        clock_: clock.Clock,
        node_identity: str,
        wake: Callable[[], None],
        held: Callable[[], set[str] | None],
        terminate: Callable[[str], None],
    ) -> None:
        self._store = store
        self._held = held
        self._terminate = terminate
        self._writer = task_writer
        self._clock = clock_
        self._node = node_identity
        self._wake = wake
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskengine-leases", daemon=True)
        #: Tasks this node re-queued after another node's lease ended (for stats and tests).
        self.requeued = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def beat(self) -> int:
        """Renew this node's leases, then re-queue expired claims; return how many re-queued."""
        self.renew()
        return self.reap()

    def renew(self) -> None:
        """Renew this node's leases; terminate attempts whose claim is no longer this node's.

        Such an attempt (another node cancelled or removed it and the NOTIFY was lost, or its
        lease lapsed and it was re-queued) would have its outcome fenced out anyway.  Only the
        attempts the reactor holds are renewed when it answers, so a claim no attempt runs (one
        left by an earlier run under this identity, say) lapses and is re-queued.
        """
        held = self._held()  # before renewing: whatever it holds was claimed by then
        store = self._store
        if held is not None and isinstance(store, ClaimTracking):
            renewed = set(store.renew_held_leases(self._node, held))
        else:
            renewed = set(store.renew_leases(self._node))
        for task_id in set() if held is None else held - renewed:
            log.warning(
                "task %s is no longer this node's claim; terminating its attempt",
                task_id,
                extra={"task_id": task_id, "node": self._node},
            )
            self._terminate(task_id)

    def expire_earlier_claims(self) -> int:
        """Expire the claims earlier runs of this node identity left; return how many.

        Their attempts died with those runs, so they are re-queued at the next ``reap`` rather
        than when their leases would have run out.
        """
        store = self._store
        if not isinstance(store, ClaimTracking):
            return 0
        expired = store.expire_earlier_claims(self._node)
        if expired:
            log.warning(
                "%d task(s) were processing under this node identity in an earlier run; "
                "re-queueing them",
                len(expired),
                extra={"node": self._node},
            )
        return len(expired)

    def reap(self) -> int:
        """Re-queue the processing tasks whose lease expired; return how many.

        An attempt keeps the due time it had when claimed (where the store knows it): its node
        died, not its handler, so it goes ahead of tasks that became due after it.
        """
        total = 0
        store = self._store
        while not self._stopping.is_set():
            expired: list[tuple[models.BackgroundTask, datetime | None]]
            if isinstance(store, ClaimTracking):
                expired = store.expired_claims_with_due(REAP_BATCH)
            else:
                expired = [(task, None) for task in store.expired_claims(REAP_BATCH)]
            if not expired:
                break
            now = self._clock.now()
            changes = []
            for task, due in expired:
                error = models.TaskError.of(
                    errors.WorkerCrashedError,
                    f"the node {task.node_identity} stopped renewing its lease during attempt "
                    f"{task.attempts}",
                )
                requeued = transitions.fail_attempt(task, error, now, due=due)
                changes.append(writer.change_for(task, requeued))
            count = sum(self._writer.apply(changes))  # fenced: one node's write applies
            if count:
                log.warning(
                    "re-queued %d task(s) whose node's lease expired",
                    count,
                    extra={"node": self._node},
                )
            total += count
            if len(expired) < REAP_BATCH:
                break
        if total:
            self.requeued += total
            self._wake()
        return total

    def _run(self) -> None:
        interval = self._store.heartbeat_interval
        # Expired leases are looked for more often than leases are renewed, so a dead node's
        # attempts are re-queued within about lease_timeout + REAP_INTERVAL.
        tick = min(interval, REAP_INTERVAL)
        renew_at, failing = 0.0, False
        delay = 0.0
        earlier_expired = False
        while not self._stopping.wait(delay):
            try:
                if not earlier_expired:
                    self.expire_earlier_claims()
                    earlier_expired = True
                if time.monotonic() >= renew_at:
                    self.renew()
                    renew_at = time.monotonic() + interval
                self.reap()
            except errors.StoreError:
                if not failing:
                    log.warning("lease renewal failed; retrying", exc_info=True)
                delay, failing = min(tick, 1.0), True
                continue
            if failing:
                log.warning("lease renewal works again")
            failing = False
            delay = max(0.0, min(tick, renew_at - time.monotonic()))


class ClusterDuties:
    """What an engine runs on a shared store; ``stop`` ends it."""

    def __init__(self, keeper: LeaseKeeper) -> None:
        self._keeper = keeper

    @property
    def keeper(self) -> LeaseKeeper:
        """The lease thread."""
        return self._keeper

    def stop(self) -> None:
        """End the lease thread (the store's listener ends when the store closes)."""
        self._keeper.stop()


def start_cluster_duties(
    store: base.TaskStore,
    task_writer: writer.TaskWriter,
    clock_: clock.Clock,
    node_identity: str,
    wake: Callable[[], None],
    held: Callable[[], set[str] | None],
    terminate: Callable[[str], None],
) -> ClusterDuties | None:
    """Start leases and wakeups when ``store`` is shared; None (nothing to do) otherwise."""
    if not store.capabilities.shared or not isinstance(store, base.SharedTaskStore):
        return None
    keeper = LeaseKeeper(store, task_writer, clock_, node_identity, wake, held, terminate)
    store.listen(node_identity, wake, terminate)
    keeper.start()
    return ClusterDuties(keeper)
