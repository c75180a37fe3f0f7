"""Handlers that take a set time or wait for a gate while keeping the CPU busy.

The fair-dispatch tests (``tests/integration/test_fairness.py``) use them.  They are CPU-bound
on purpose: attempts queued behind one must be taken back (``taskengine/pool/ledger.py``)
while the handler holds the worker's GIL.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def busy(payload: dict[str, Any]) -> tuple[int, float, float]:
    """Spin for ``payload["seconds"]``, or until the file ``payload["gate"]`` exists.

    A gated call first writes its pid to ``payload["started"]`` and gives up after 60 s, so
    that a failing test never leaves a worker spinning.  Returns (pid, start, end) on the
    wall clock.
    """
    start = time.time()
    if "gate" not in payload:
        deadline = time.perf_counter() + float(payload["seconds"])
        while time.perf_counter() < deadline:
            pass
        return os.getpid(), start, time.time()
    Path(payload["started"]).write_text(str(os.getpid()))
    gate = Path(payload["gate"])
    deadline = time.perf_counter() + 60.0
    while not gate.exists():
        spin_until = time.perf_counter() + 0.002
        while time.perf_counter() < spin_until:
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
    return os.getpid(), start, time.time()
