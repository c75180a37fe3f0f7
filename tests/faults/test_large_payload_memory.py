"""A large payload's round trip costs the coordinator at most three copies of it at the peak.

Each case runs in a fresh coordinator process, so that the kernel's high-water mark of its RSS
is this round trip's: the child builds a ``bytes`` payload, creates an echo task, drops its own
reference, waits, and decodes the result.  Growth is the peak minus the RSS before the payload
existed, so the payload itself is one of the copies.  The task ``wait`` returns holds the
payload's blob and the result's blob, and the decoded result is the third copy: three is the
floor of the round trip, and two the floor until ``wait`` returns.  Anything more is a copy on
the way (a blob concatenated with its header, a blob pickled into a pipe message or unpickled
out of one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MB = 1_000_000
SIZE = 50 * MB
#: Python's own allocations during the round trip (a few hundred KB measured), with room.
SLACK = 4 * MB
ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import json, sys, tempfile
from pathlib import Path
import taskengine

def status(field):
    with open("/proc/self/status", encoding="ascii") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)

kind, size = sys.argv[1], int(sys.argv[2])
folder = tempfile.mkdtemp()
store = taskengine.MemoryStore() if kind == "memory" else taskengine.SqliteStore(
    Path(folder) / "tasks.db"
)
with taskengine.TaskEngine(store, max_total_workers=1) as engine:
    engine.register_handler("echo", "tests.handlers.basic", "echo", max_worker_count=1)
    engine.wait(engine.create("echo", b"warm" * 1000), timeout=60)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # the high-water mark restarts from the current RSS
    baseline = status("VmRSS")
    payload = bytes(range(256)) * (size // 256)
    task_id = engine.create("echo", payload, retry_count=0)
    del payload
    done = engine.wait(task_id, timeout=120)
    at_wait = status("VmHWM")
    result = done.result
    peak = status("VmHWM")
    ok = done.status is taskengine.TaskStatus.SUCCESS and len(result) == size // 256 * 256
    del result, done
print(json.dumps({"ok": ok, "at_wait": at_wait - baseline, "peak": peak - baseline}))
"""


def _round_trip(store: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, store, str(SIZE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    figures: dict[str, int] = json.loads(out.stdout.splitlines()[-1])
    assert figures["ok"], out.stderr[-2000:]
    return figures


@pytest.fixture(autouse=True)
def _needs_a_resettable_peak() -> None:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the RSS high-water mark cannot be reset here (/proc/self/clear_refs)")


def test_memory_store_round_trip_peaks_within_three_copies() -> None:
    figures = _round_trip("memory")
    assert figures["at_wait"] <= 2 * SIZE + SLACK, figures["at_wait"] / SIZE
    assert figures["peak"] <= 3 * SIZE + SLACK, figures["peak"] / SIZE


def test_sqlite_store_round_trip_peaks_within_three_copies() -> None:
    figures = _round_trip("sqlite")
    assert figures["peak"] <= 3 * SIZE + SLACK, figures["peak"] / SIZE
