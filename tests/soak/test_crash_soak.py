"""The short crash soak in ``make test``: 20 SIGKILLs of a busy engine on SQLite, then checks.

``make soak`` runs the long version (``python -m tests.soak.crash_soak --kills 200``).  The
seed changes with every run and is printed, so a failure can be replayed with ``--seed``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.soak import crash_soak

KILLS = 20


def test_crash_soak(tmp_path: Path) -> None:
    seed = int(time.time() * 1000) % 100_000
    figures = crash_soak.run(KILLS, seed, tmp_path)
    print(json.dumps(figures, indent=2))  # shown with -s, and on failure
    assert figures["failures"] == [], f"seed {seed}: {figures['failures'][:20]}"
    assert figures["kills"] == KILLS
    assert figures["orphan_processes"] == 0
    landed = figures["kills_by_kind"]
    # Each placed kind was tried at least 3 times; each must have landed where it was placed.
    for kind in ("insert_many", "apply_and_claim", "purge_expired", "stop"):
        assert landed.get(kind, 0) >= 1, (seed, landed)
    assert figures["tasks_acknowledged"] >= 100
    assert figures["attempts_cut_by_kills"] >= 1
