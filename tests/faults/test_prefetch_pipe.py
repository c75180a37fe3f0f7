"""Prefetch never lets the coordinator and a worker block writing to each other (a deadlock).

A busy worker reads nothing until its attempt ends, and it ends by writing the result.  If the
coordinator had filled the worker's pipe with prefetched attempts, it would block in that write
while the worker blocks writing a result larger than the pipe: both wait forever.  Prefetched
attempts are therefore sent only while the bytes waiting in the pipe stay under a fixed budget;
the others wait in the coordinator until the worker takes them.
"""

from __future__ import annotations

import taskengine
from taskengine.pool import pool


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


def test_prefetch_budget_is_well_under_a_socket_buffer() -> None:
    # Linux gives an AF_UNIX stream socket at least this much send buffer by default; the
    # prefetch budget must fit in it with room for the messages' own framing.
    assert 0 < pool.PREFETCH_BYTES <= 64 * 1024
