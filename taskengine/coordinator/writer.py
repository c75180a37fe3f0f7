"""The single path by which the engine changes stored tasks.

Every change is a fenced store write followed, under the same lock, by its announcement
(``publishing.py``).  Holding one lock across "store, then announce" is what makes callbacks
arrive in store order even when the reactor and API threads change the same task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime

import attrs

from taskengine.coordinator import publishing
from taskengine.core import models
from taskengine.stores import base

__all__ = ["Change", "TaskWriter", "change_for"]


@attrs.frozen(kw_only=True)
class Change:
    """A store write and the record to announce if it applies (None: announce a removal)."""

    write: base.Write
    task: models.BackgroundTask | None
    status_changed: bool


def change_for(old: models.BackgroundTask, new: models.BackgroundTask) -> Change:
    """The fenced write that turns ``old`` into ``new``.

    A task that finished with ``retain_for == 0`` is deleted in the same write rather than
    stored, and its final snapshot is still announced.
    """
    write: base.Write
    if new.status.is_final and new.retain_for == 0:
        write = base.Delete(
            task_id=new.id, expected_status=old.status, expected_attempts=old.attempts
        )
    else:
        write = base.Update(
            task=new, expected_status=old.status, expected_attempts=old.attempts, previous=old
        )
    return Change(write=write, task=new, status_changed=new.status is not old.status)


class TaskWriter:
    """Applies changes to the store and announces the ones that applied, in order."""

    def __init__(self, store: base.TaskStore, publisher: publishing.Publisher) -> None:
        self._store = store
        self._publisher = publisher
        self._lock = threading.Lock()

    def barrier(self) -> None:
        """Return once every change stored so far has also been announced."""
        with self._lock:
            pass

    def apply(self, changes: Sequence[Change]) -> list[bool]:
        """Write ``changes`` in one transaction; announce each that applied."""
        if not changes:
            return []
        with self._lock:
            applied = self._store.apply([change.write for change in changes])
            self._announce(changes, applied, [])
        return applied

    def announce(self, changes: Sequence[Change]) -> None:
        """Announce changes already stored by a write whose commit reported an error."""
        if changes:
            with self._lock:
                self._announce(changes, [True] * len(changes), [])

    def commit(
        self,
        changes: Sequence[Change],
        claims: Sequence[tuple[str, int]],
        now: datetime,
        claim: Callable[[models.BackgroundTask], models.BackgroundTask],
    ) -> tuple[list[bool], list[list[models.BackgroundTask]]]:
        """Write ``changes`` and claim due tasks in one transaction (the group commit).

        The changes are announced first, then the claimed tasks as processing.
        """
        with self._lock:
            applied, claimed = self._store.apply_and_claim(
                [change.write for change in changes], claims, now, claim
            )
            self._announce(changes, applied, claimed)
        return applied, claimed

    def _announce(
        self,
        changes: Sequence[Change],
        applied: Sequence[bool],
        claimed: Sequence[Sequence[models.BackgroundTask]],
    ) -> None:
        stored: list[tuple[models.BackgroundTask, bool]] = []
        for change, ok in zip(changes, applied, strict=True):
            if not ok:
                continue
            if change.task is None:
                self._publisher.removed(change.write.task_id)  # type: ignore[union-attr]
            else:
                stored.append((change.task, change.status_changed))
        stored.extend((task, True) for tasks in claimed for task in tasks)
        if stored:
            self._publisher.publish(stored)
