"""The crash soak's handler (module "tests.soak.handlers"), run in the engine's workers.

Every attempt first appends ``"<id> <attempt>"`` to ``payload["log"]`` with one O_APPEND write,
which records each execution exactly, even when the process dies right after.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import taskengine
from tests.handlers.faulty import append_line


def work(payload: dict[str, Any]) -> str:
    """Log the attempt, then do what ``payload["action"]`` says."""
    task = taskengine.current_task()
    append_line(payload["log"], f"{task.id} {task.attempt}\n")
    action = payload["action"]
    if action == "sleep":
        time.sleep(payload["seconds"])
    elif action == "fail":
        raise ValueError("planned soak failure")
    elif action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    elif action == "hang":  # ended by the pool's execution_timeout
        while True:
            time.sleep(1)
    return task.id


def slow_shutdown() -> None:
    """A shutdown method that takes a moment, so that ``stop()`` lasts long enough to be hit."""
    time.sleep(0.2)
