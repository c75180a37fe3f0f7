"""Initialise and shutdown methods that leave marker files, proving where and how often they ran.

Initialise and shutdown take no arguments, so they find their marker directory through a pointer
file: ``$TASKENGINE_TEST_HOOKS_ROOT/current`` holds the directory of the running test.  The
environment variable must be set before the engine's first worker process is started: with the
``forkserver`` start method, workers inherit the environment of the fork server (started once
per coordinator process), not the coordinator's environment at the time of the spawn.
``tests/integration/conftest.py`` sets it when it is imported.

Each call appends one line to ``init-<pid>`` / ``shutdown-<pid>`` in the marker directory, so a
test can count calls per worker process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Name of the environment variable naming the root that holds the pointer file.
ROOT_VARIABLE = "TASKENGINE_TEST_HOOKS_ROOT"

_marker_dir: Path | None = None
_initialised = False


def pointer_file() -> Path:
    """The file whose content is the marker directory of the running test."""
    root = os.environ.get(ROOT_VARIABLE)
    if not root:
        raise RuntimeError(f"{ROOT_VARIABLE} is not set in this worker's environment")
    return Path(root) / "current"


def _append(name: str) -> None:
    assert _marker_dir is not None
    with open(_marker_dir / f"{name}-{os.getpid()}", "a") as marker:
        marker.write("x\n")


def init() -> None:
    global _marker_dir, _initialised
    _marker_dir = Path(pointer_file().read_text())
    _append("init")
    _initialised = True


def shutdown() -> None:
    _append("shutdown")


def work(payload: Any) -> tuple[int, bool]:
    """Return (pid, whether ``init`` ran in this process before this call)."""
    return os.getpid(), _initialised


def init_fails() -> None:
    raise RuntimeError("planned initialise failure")


def gated(payload: dict[str, Any]) -> tuple[str, int]:
    """``tests.handlers.probes.gated`` in a module with initialise and shutdown methods."""
    from tests.handlers import probes

    return probes.gated(payload)
