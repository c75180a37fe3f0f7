"""A coordinator process for the crash tests (faults.md#fault-22 to #fault-24), SIGKILLed.

Usage: ``python sqlite_driver.py MODE DB WORKDIR`` with the repository root on PYTHONPATH.

Modes:

* ``pending``: create 100 tasks of type "logged" (no handler registered), one ``create`` each,
  then write their ids to ``WORKDIR/ids.json`` and wait to be killed.
* ``busy``: register "logged" (``log_attempt``, 1 s per attempt, 3 workers), create 9 tasks,
  write their ids, and wait to be killed while they run.
* ``bulk``: call ``create_many`` with 1000 payloads again and again; after each call returns,
  append its number to ``WORKDIR/acks`` (one O_APPEND write), until killed.

Workers use the forkserver start method, which imports this file again as ``__mp_main__``:
everything runs under the ``__main__`` guard.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import taskengine
from tests.handlers.faulty import append_line, write_atomic

FAULTY = "tests.handlers.faulty"
PENDING_COUNT = 100
BUSY_COUNT = 9
BULK_SIZE = 1000


def main(mode: str, db: str, workdir: Path) -> None:
    log = str(workdir / "runs.log")
    engine = taskengine.TaskEngine(taskengine.SqliteStore(db), retry_interval=0.1)
    engine.start()
    if mode == "pending":
        ids = [
            engine.create("logged", {"log": log, "n": n}, retain_for=None, retry_interval=0.1)
            for n in range(PENDING_COUNT)
        ]
        write_atomic(workdir / "ids.json", json.dumps(ids))
    elif mode == "busy":
        engine.register_handler("logged", FAULTY, "log_attempt", max_worker_count=3)
        payload = {"log": log, "pid_dir": str(workdir), "seconds": 1.0}
        ids = engine.create_many(
            "logged", [dict(payload, n=n) for n in range(BUSY_COUNT)], retain_for=None
        )
        write_atomic(workdir / "ids.json", json.dumps(ids))
    elif mode == "bulk":
        batch = 0
        while True:
            engine.create_many("bulk", list(range(BULK_SIZE)), retain_for=None)
            batch += 1
            append_line(str(workdir / "acks"), f"{batch}\n")
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    threading.Event().wait()  # until the test kills this process


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
