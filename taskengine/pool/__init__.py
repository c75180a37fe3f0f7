"""Worker pools: one pool of processes per task type, supervised from the reactor thread.

This package starts, feeds and watches worker processes and nothing else: it never imports the
stores or the coordinator.  ``supervisor.py`` reports how attempts ended as plain values
(``outcomes.py``); the coordinator's dispatch stores them.

Data flow (one pipe per worker; one attempt runs per worker, short ones are prefetched)::

    API thread                 reactor thread (coordinator)              worker process
    ----------                 ----------------------------              --------------
    create() --insert--> store
             --wake-->   claim_due(store) -> processing
                         Run(id, attempt, payload blob) ---pipe--->  decode, handler(payload)
                                                      <--pipe---  Progress(fraction)
                                                      <--pipe---  Done(result blob | TaskError)
                         fenced write (batched) -> store
                         announce -> callbacks thread, wait() wakeups
                         sentinel fires (worker died) -> attempt fails with WorkerCrashedError

When the reactor sleeps and a worker of its type is idle, ``create`` itself claims and sends
the Run on the API thread, under the reactor's turn lock (``coordinator/reactor.py``).

A worker runs one attempt at a time, so a dead worker maps to exactly one attempt (the first
of its queue); attempts prefetched behind it had not started and are handed back uncounted.  A
pool is never "broken" by a death.

Prefetched attempts are spread level by level over a type's workers, and an idle worker takes
attempts that wait, not started, behind a busy one: from the coordinator's queue at once, or out
of the busy worker's pipe through its revocation ledger (``ledger.py``), shared memory that the
busy worker consults before starting each attempt (``balance.py``, ``supervisor.py``).
"""

from __future__ import annotations
