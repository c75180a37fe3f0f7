"""Handlers that report what happened in the worker: pids, timings, attempts, memory, gates.

Named by module path in the integration tests ("tests.handlers.probes").  Everything a handler
needs (file paths, durations) comes in its payload, so a handler never depends on the test's
process state.  Gates are files: a gated handler writes its pid to ``started`` and then runs
until the file ``gate`` exists (or ``limit`` seconds pass), which lets a test act while an
attempt is provably running without any sleep on the test's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import psutil

import taskengine

#: Memory kept alive by ``hog`` for the life of the worker process.
_HOARD: list[bytearray] = []


def _wait_for_gate(payload: dict[str, Any]) -> None:
    Path(payload["started"]).write_text(str(os.getpid()))
    gate = Path(payload["gate"])
    deadline = time.monotonic() + payload.get("limit", 30.0)
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.005)


def interval(payload: dict[str, Any]) -> tuple[int, float, float]:
    """Sleep ``seconds``; return (pid, start, end) on the system-wide monotonic clock."""
    start = time.monotonic()
    time.sleep(payload["seconds"])
    return os.getpid(), start, time.monotonic()


def started_at(payload: Any) -> tuple[int, float]:
    """Return (pid, wall-clock time at the start of the call)."""
    return os.getpid(), time.time()


def gated(payload: dict[str, Any]) -> tuple[str, int]:
    """Run until the gate opens; return (``value``, pid)."""
    _wait_for_gate(payload)
    return payload.get("value", "gated"), os.getpid()


def version_one(payload: dict[str, Any]) -> tuple[str, int]:
    """The first version of a re-registered handler (gated when the payload has a gate)."""
    if "gate" in payload:
        _wait_for_gate(payload)
    return "v1", os.getpid()


def version_two(payload: dict[str, Any]) -> tuple[str, int]:
    """The second version of a re-registered handler."""
    return "v2", os.getpid()


def progress_then_gate(payload: dict[str, Any]) -> float:
    """Report ``fraction`` as progress, then wait for the gate."""
    taskengine.current_task().report_progress(payload["fraction"], "reported")
    _wait_for_gate(payload)
    return float(payload["fraction"])


def attempt_log(payload: dict[str, Any]) -> dict[str, Any]:
    """Log (attempt, wall time) to ``log``; fail while attempt <= ``fails``; return the context."""
    task = taskengine.current_task()
    with open(payload["log"], "a") as log:
        log.write(f"{task.attempt} {time.time()!r}\n")
    if task.attempt <= payload.get("fails", 0):
        raise ValueError(f"planned failure of attempt {task.attempt} of {task.id}")
    return {"id": task.id, "type": task.type, "attempt": task.attempt, "pid": os.getpid()}


def rss(payload: Any) -> tuple[int, int]:
    """Return (pid, resident set size in bytes) of this worker."""
    return os.getpid(), psutil.Process().memory_info().rss


def hog(payload: dict[str, Any]) -> tuple[int, int]:
    """Allocate and keep ``mb`` MiB (touched, so resident); return (pid, rss after)."""
    size = payload["mb"] * 1024 * 1024
    if size:
        _HOARD.append(bytearray(b"\x01") * size)
    return os.getpid(), psutil.Process().memory_info().rss


def make(payload: dict[str, Any]) -> Any:
    """Build a result in the worker: ``kind`` selects which."""
    kind = payload["kind"]
    if kind == "large":
        return hashlib.sha256(b"seed").digest() * (payload["size"] // 32)
    if kind == "none":
        return None
    raise ValueError(f"unknown kind {kind!r}")


async def async_context(payload: dict[str, Any]) -> dict[str, Any]:
    """Await several coroutines concurrently and read ``current_task()`` inside the coroutine."""
    task = taskengine.current_task()

    async def square(n: int) -> int:
        await asyncio.sleep(0.01)
        return n * n

    squares = await asyncio.gather(*(square(n) for n in payload["numbers"]))
    return {"id": task.id, "attempt": task.attempt, "squares": squares}


async def async_fail(payload: Any) -> None:
    """An ``async def`` handler that raises after awaiting."""
    await asyncio.sleep(0)
    raise KeyError(f"async failure {payload!r}")


class Tools:
    """Handlers reached as "Class.static_method"."""

    @staticmethod
    def describe(payload: dict[str, Any]) -> dict[str, Any]:
        return {"keys": sorted(payload), "pid": os.getpid()}

    @staticmethod
    async def async_describe(payload: dict[str, Any]) -> list[str]:
        await asyncio.sleep(0)
        return sorted(payload)


def sleep_logged(payload: dict[str, Any]) -> int:
    """Log "attempt pid" to ``log``, then sleep ``seconds``; return the pid."""
    task = taskengine.current_task()
    with open(payload["log"], "a") as log:
        log.write(f"{task.attempt} {os.getpid()}\n")
    time.sleep(payload["seconds"])
    return os.getpid()


def log_id(payload: dict[str, Any]) -> int:
    """Append "<task id> <pid>" to ``log`` (one O_APPEND write: atomic across processes)."""
    line = f"{taskengine.current_task().id} {os.getpid()}\n".encode()
    fd = os.open(payload["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return os.getpid()
