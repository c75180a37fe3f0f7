"""Prefetch never lets the coordinator and a worker block writing to each other (a deadlock).

A busy worker reads nothing until its attempt ends, and it ends by writing the result.  If the
coordinator had filled the worker's pipe with prefetched attempts, it would block in that write
while the worker blocks writing a result larger than the pipe: both wait forever.  Prefetched
attempts are therefore sent only while the bytes waiting in the pipe stay under a fixed budget;
the others wait in the coordinator until the worker takes them.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest

import taskengine
from taskengine.pool import messages, pool


def test_large_payloads_and_results_after_prefetch_has_started_all_finish(
    memory_engine: taskengine.TaskEngine,
) -> None:
    memory_engine.register_handler("echo", "tests.handlers.basic", "echo", max_worker_count=1)
    # Many tiny attempts first: the pool learns that attempts are short and starts prefetching.
    warm_up = memory_engine.create_many("echo", list(range(200)), retain_for=None)
    for task_id in warm_up:
        assert memory_engine.wait(task_id, timeout=60).status is taskengine.TaskStatus.SUCCESS
    big = b"x" * 300_000  # larger than a socket buffer, each way
    task_ids = memory_engine.create_many("echo", [big] * 40, retain_for=None)
    for task_id in task_ids:
        task = memory_engine.wait(task_id, timeout=120)
        assert task.status is taskengine.TaskStatus.SUCCESS
        assert task.result == big


def _allowed(payload_bytes: int) -> int:
    """How many Run messages of this payload size the prefetch rules let wait in one pipe."""
    per_message = payload_bytes + pool.RUN_OVERHEAD_BYTES
    return max(1, min(pool.PREFETCH_MAX, pool.PREFETCH_BYTES // per_message))


@pytest.mark.parametrize("payload_bytes", [0, 100, 1_000, 10_000, 30_000])
def test_the_most_prefetch_allowed_fits_in_a_real_worker_pipe_twice_over(
    payload_bytes: int,
) -> None:
    # The kernel charges each small message far more than its bytes (about 700 bytes of
    # bookkeeping per write on Linux), so the byte budget alone proves nothing: fill a pipe
    # made like a worker's with the most the rules allow, twice, without blocking once.
    parent, child = multiprocessing.get_context("forkserver").Pipe(duplex=True)
    try:
        os.set_blocking(parent.fileno(), False)
        run = messages.encode(messages.Run("0" * 32, "echo", 1, b"x" * payload_bytes, 1))
        for _ in range(2 * _allowed(payload_bytes)):
            parent.send_bytes(run)  # BlockingIOError would mean a coordinator could block
    finally:
        parent.close()
        child.close()
