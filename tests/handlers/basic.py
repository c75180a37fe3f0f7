"""Handlers for the test suite, named by module path ("tests.handlers.basic")."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import taskengine


def echo(payload: Any) -> Any:
    return payload


def add(payload: dict[str, int]) -> int:
    return payload["a"] + payload["b"]


def fail(payload: Any) -> None:
    raise ValueError(f"planned failure: {payload!r}")


def pid(payload: Any) -> int:
    return os.getpid()


def sleep(payload: dict[str, Any]) -> Any:
    time.sleep(payload["seconds"])
    return payload.get("value")


def bump(path: str) -> int:
    """Append one byte to ``path`` (O_APPEND: atomic across processes); return the count."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        return len(f.read())


def fail_times(payload: dict[str, Any]) -> int:
    """Fail the first ``fails`` attempts (counted in the file ``counter``), then succeed."""
    n = bump(payload["counter"])
    if n <= payload["fails"]:
        raise ValueError(f"planned failure {n}")
    return n


async def async_echo(payload: Any) -> Any:
    await asyncio.sleep(0.001)
    return {"async": payload}


def progress(payload: Any) -> str:
    task = taskengine.current_task()
    task.report_progress(0.5, "half way")
    return task.id


def context_info(payload: Any) -> dict[str, Any]:
    task = taskengine.current_task()
    return {"id": task.id, "type": task.type, "attempt": task.attempt}


class Static:
    @staticmethod
    def double(payload: int) -> int:
        return payload * 2


def env(name: str) -> str | None:
    return os.environ.get(name)
