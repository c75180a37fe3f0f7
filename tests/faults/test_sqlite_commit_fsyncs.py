"""Which SqliteStore commits reach the disk, counted as fsyncs by strace in a subprocess.

At ``synchronous="full"`` a commit of inserts or of outcomes waits for one fsync of the WAL; a
commit of claims alone waits for none (it reaches the disk with the next durable commit, see
the Durability paragraph of ``taskengine/stores/sqlite/store.py``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)"
)

#: Commits per phase: few enough that no automatic checkpoint (and its fsyncs) falls among them.
COMMITS = 10

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from taskengine.core import codec, transitions
    from taskengine.stores import base
    from taskengine.stores.sqlite.store import SqliteStore
    from tests.contract.factories import NODE, at, claimer, new

    def mark(phase):
        os.write(2, f"@@{phase}\\n".encode())

    store = SqliteStore(sys.argv[1])
    store.open()
    tasks = [new() for _ in range(COMMITS)]
    mark("inserts")
    for task in tasks:
        store.insert_many([task])
    mark("claims")
    claimed = [store.claim_due("alpha", at(10), 1, claimer(at(10)))[0] for _ in tasks]
    mark("outcomes")
    for task in claimed:
        done = transitions.succeed(task, codec.encode(1), at(20))
        update = base.Update(task=done, expected_status=task.status, expected_attempts=1)
        assert store.apply([update]) == [True]
    mark("end")
    store.close()
    """
).replace("COMMITS", str(COMMITS))


def syncs_per_phase(log: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    phase = None
    for line in log.splitlines():
        marker = re.search(r'write\(2, "@@(\w+)', line)
        if marker:
            phase = marker.group(1)
            counts[phase] = 0
        elif phase is not None and re.search(r"\b(fsync|fdatasync)\(", line):
            counts[phase] += 1
    return counts


def test_claims_alone_skip_the_fsync_inserts_and_outcomes_wait_for_it(tmp_path: Path) -> None:
    trace = tmp_path / "strace.log"
    repo = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,write",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            SCRIPT,
            str(tmp_path / "tasks.db"),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0 and "ptrace" in completed.stderr:
        pytest.skip(f"strace cannot trace here: {completed.stderr.strip()[:200]}")
    assert completed.returncode == 0, completed.stderr
    counts = syncs_per_phase(trace.read_text())
    assert counts["inserts"] >= COMMITS
    assert counts["claims"] == 0
    assert counts["outcomes"] >= COMMITS
