"""The node file: how ``taskengine stats`` in one process sees a worker node's pools.

Pool figures (workers alive and busy, attempts done, failures, mean run time) live in the
node's process.  A ``taskengine worker`` on a SQLite store therefore writes its
``engine.stats()`` snapshot, in the JSON form and without any payload, to ``<database>.node.json``
every ``INTERVAL`` seconds (atomically: a temporary file renamed over it, mode 0600) and deletes
it when it stops.  ``taskengine stats`` reads it when the node that wrote it is still alive and
the snapshot is recent, and shows those figures next to the store's counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psutil

from taskengine.coordinator import stats as engine_stats

__all__ = ["INTERVAL", "path_for", "read_live", "remove", "write"]

#: Seconds between two snapshots written by a node.
INTERVAL: Final = 2.0
#: A snapshot older than this is ignored (the node hangs, or its clock jumped).
MAX_AGE: Final = 10 * INTERVAL


def path_for(database: str) -> str:
    """The node file of a SQLite database file."""
    return f"{database}.node.json"


def write(path: str, snapshot: engine_stats.EngineStats) -> None:
    """Replace the node file with ``snapshot`` (and this process's pid)."""
    data = {"pid": os.getpid(), "stats": snapshot.to_json()}
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


def remove(path: str) -> None:
    """Delete the node file if this process wrote it."""
    with contextlib.suppress(OSError, ValueError):
        with open(path) as source:
            if json.load(source).get("pid") != os.getpid():
                return
        os.unlink(path)


def read_live(path: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The snapshot in the node file if its node still runs and it is recent, else None."""
    try:
        with open(path) as source:
            data = json.load(source)
        pid = int(data["pid"])
        snapshot: dict[str, Any] = data["stats"]
        taken = datetime.fromisoformat(snapshot["dateTaken"].replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    moment = now or datetime.now(UTC)
    if abs(moment - taken) > timedelta(seconds=MAX_AGE) or not _alive(pid):
        return None
    return snapshot


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def due(last: float) -> bool:
    """Whether a node that last wrote at monotonic time ``last`` should write again."""
    return time.monotonic() - last >= INTERVAL
