"""Handlers of the taskengine.testing tests: the same module runs inline and in workers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import taskengine
from taskengine import testing
from taskengine.coordinator import inline

#: The fake clock an inline "slow" handler advances instead of sleeping (set by the test).
CLOCK: list[testing.FakeClock] = []


def echo(payload: Any) -> Any:
    return payload


def fail(payload: Any) -> None:
    raise ValueError(f"planned failure: {payload!r}")


def crash(payload: Any) -> None:
    testing.crash_worker()


def slow(payload: dict[str, float]) -> str:
    """Run ``seconds`` long: really in a worker, on the fake clock inline."""
    if inline.is_inline():
        CLOCK[0].advance(payload["seconds"])
    else:
        time.sleep(payload["seconds"])
    return "finished"


def progress(payload: Any) -> int:
    task = taskengine.current_task()
    task.report_progress(0.5, "half way")
    return task.attempt


async def async_double(payload: int) -> int:
    await asyncio.sleep(0)
    return payload * 2


def behave(payload: dict[str, Any]) -> Any:
    """Do what the payload says: ``{"do": "ok" | "fail" | "crash", "value": ...}``."""
    what = payload["do"]
    if what == "fail":
        raise ValueError(f"asked to fail ({payload.get('value')!r})")
    if what == "crash":
        testing.crash_worker()
    return payload.get("value")


def init_raise() -> None:
    raise RuntimeError("initialise refused")


def _mark(name: str) -> None:
    directory = os.environ.get("TASKENGINE_TESTING_MARKERS")
    if directory:
        with (Path(directory) / name).open("a") as f:
            f.write(f"{os.getpid()}\n")


def init_mark() -> None:
    _mark("init")


def shutdown_mark() -> None:
    _mark("shutdown")


#: The inline engine a self-cancelling handler calls (set by the test).
ENGINE: list[taskengine.TaskEngine] = []


def cancel_self(payload: Any) -> str:
    """Cancel (terminate) the running task from inside its own inline attempt."""
    assert ENGINE[0].cancel(taskengine.current_task().id, terminate=True)
    return "written back?"


#: What ``scripted`` does in an inline attempt that should time out: advance the clock this much.
SCRIPTED_TIMEOUT_STEP = 31.0


def scripted(payload: dict[str, Any]) -> int:
    """Behave as ``payload["plan"][attempt - 1]`` says (``"ok"`` once the plan is used up).

    ``ok`` returns the attempt number; ``fail`` raises; ``crash`` kills the worker (simulated
    inline); ``timeout`` runs past the execution timeout (on the fake clock inline, for real in
    a worker); ``hang`` blocks for a minute (real workers only); ``cancel_self`` and
    ``remove_self`` cancel (terminate) or remove the running task (inline only).
    """
    task = taskengine.current_task()
    plan = payload["plan"]
    what = plan[task.attempt - 1] if task.attempt <= len(plan) else "ok"
    if what == "fail":
        raise ValueError(f"scripted failure of attempt {task.attempt}")
    if what == "crash":
        testing.crash_worker()
    if what == "timeout":
        if inline.is_inline():
            CLOCK[0].advance(SCRIPTED_TIMEOUT_STEP)
        else:
            time.sleep(30)
    if what == "hang":
        time.sleep(60)
    if what == "cancel_self":
        assert ENGINE[0].cancel(task.id, terminate=True)
    if what == "remove_self":
        assert ENGINE[0].remove(task.id)
    return task.attempt


def run_inside(payload: Any) -> str:
    """Call run_until_idle from inside an inline attempt (refused)."""
    try:
        ENGINE[0].run_until_idle()
    except taskengine.TaskEngineError as exc:
        return str(exc)
    return "no error"


_probe_lock = threading.Lock()
_probe_running = [0]


def concurrency_probe(payload: Any) -> int:
    """Return how many probes were running at once (including this one)."""
    with _probe_lock:
        _probe_running[0] += 1
        seen = _probe_running[0]
    time.sleep(0.001)  # widen the window in which an overlap would show
    with _probe_lock:
        _probe_running[0] -= 1
    return seen
