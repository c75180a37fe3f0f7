"""Handlers of the multi-node tests (module "tests.postgres.node_handlers").

``logged`` appends ``"<task id> <attempt> <node>"`` to ``payload["log"]`` with one O_APPEND
write (atomic across processes), then optionally sleeps; ``<node>`` is the ``TE_TEST_NODE``
variable the node's driver set, which its workers inherit.  ``spin`` burns CPU for the
benchmark.
"""

from __future__ import annotations

import os
import time
from typing import Any

import taskengine

NODE_VARIABLE = "TE_TEST_NODE"


def logged(payload: dict[str, Any]) -> str:
    """Record this execution, then sleep ``payload["seconds"]`` (default 0)."""
    task = taskengine.current_task()
    line = f"{task.id} {task.attempt} {os.environ.get(NODE_VARIABLE, '?')}\n"
    fd = os.open(payload["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    seconds = payload.get("seconds", 0)
    if seconds:
        time.sleep(seconds)
    return task.id


def hang_with_pid(payload: dict[str, Any]) -> None:
    """Write this worker's pid to ``payload["pid_file"]``, then sleep until killed."""
    tmp = payload["pid_file"] + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(tmp, payload["pid_file"])
    time.sleep(120)


def noop(payload: Any) -> None:
    """Do nothing (throughput benchmark)."""


def started(payload: dict[str, Any]) -> float:
    """Return when this attempt started (wall clock; cross-node latency benchmark)."""
    return time.time()


def spin(payload: dict[str, Any]) -> int:
    """Burn CPU for about ``payload["seconds"]`` seconds."""
    deadline = time.process_time() + payload["seconds"]
    n = 0
    while time.process_time() < deadline:
        n += 1
    return n
