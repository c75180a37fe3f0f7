"""Worker pools: one pool of processes per task type, run by one reactor thread.

Data flow (one pipe per worker, one attempt in flight per worker)::

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

A dead worker therefore maps to exactly one attempt; a pool is never "broken" by it.
"""

from __future__ import annotations
