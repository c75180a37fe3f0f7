"""Cluster duties of an engine on a shared store (``capabilities.shared``, e.g. PostgreSQL).

One thread per engine renews the leases of this node's claims every ``heartbeat_interval`` and,
every ``REAP_INTERVAL`` (or more often), re-queues the tasks of nodes whose lease ended: the
cut-short attempt counts and its error is ``WorkerCrashedError``, written through the engine's
fenced writer, so exactly one node's write applies and a late outcome of the lost attempt
changes nothing.  The store's LISTEN
thread wakes the reactor on new work and forwards terminations requested by other nodes.

Single-node stores never get here, so MemoryStore and SqliteStore behave as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from taskengine import clock, errors, models, transitions, writer
from taskengine.stores import base

__all__ = ["LeaseKeeper", "start_cluster_duties"]

log = logging.getLogger(__name__)

#: Expired claims re-queued per store call.
REAP_BATCH: Final = 200
#: Longest time between two looks for expired leases (seconds).
REAP_INTERVAL: Final = 2.0


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
        lease lapsed and it was re-queued) would have its outcome fenced out anyway.
        """
        held = self._held()  # before renewing: whatever it holds was claimed by then
        renewed = set(self._store.renew_leases(self._node))
        for task_id in set() if held is None else held - renewed:
            log.warning(
                "task %s is no longer this node's claim; terminating its attempt",
                task_id,
                extra={"task_id": task_id, "node": self._node},
            )
            self._terminate(task_id)

    def reap(self) -> int:
        """Re-queue the processing tasks whose lease expired; return how many."""
        total = 0
        while not self._stopping.is_set():
            expired = self._store.expired_claims(REAP_BATCH)
            if not expired:
                break
            now = self._clock.now()
            changes = []
            for task in expired:
                error = models.TaskError.of(
                    errors.WorkerCrashedError,
                    f"the node {task.node_identity} stopped renewing its lease during attempt "
                    f"{task.attempts}",
                )
                changes.append(writer.change_for(task, transitions.fail_attempt(task, error, now)))
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
        while not self._stopping.wait(delay):
            try:
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
