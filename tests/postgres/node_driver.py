"""One engine node of the multi-node tests, run as its own process (and process group).

Usage: ``python node_driver.py DSN SCHEMA NODE WORKERS LEASE_TIMEOUT READY_FILE [TYPES]`` with
the repository root on PYTHONPATH.  It starts an engine on ``PostgresStore(DSN, schema=SCHEMA)``
(connections named ``SCHEMA``, so a test can end them), registers the handlers of
``node_handlers`` named in TYPES (comma-separated; all by default) under their own names, writes
READY_FILE, and runs until SIGTERM (stop gracefully) or SIGKILL.

Workers use the forkserver start method, which imports this file again as ``__mp_main__``:
everything runs under the ``__main__`` guard.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import taskengine
from tests.postgres.node_handlers import NODE_VARIABLE

ALL_TYPES = ("logged", "hang_with_pid", "noop", "spin", "started")


def main(
    dsn: str, schema: str, node: str, workers: int, lease: float, ready: str, types: list[str]
) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{node} %(asctime)s %(name)s %(message)s")
    os.environ[NODE_VARIABLE] = node  # before the engine starts the fork server
    store = taskengine.PostgresStore(
        dsn, schema=schema, lease_timeout=lease, application_name=schema, connect_timeout=2.0
    )
    engine = taskengine.TaskEngine(
        store, node_identity=node, max_total_workers=workers, retry_interval=0.1
    )
    for task_type in types:
        engine.register_handler(
            task_type, "tests.postgres.node_handlers", task_type, max_worker_count=workers
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine.start()
    with open(ready + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(ready + ".tmp", ready)
    stop.wait()
    engine.stop(timeout=10)


if __name__ == "__main__":
    dsn_, schema_, node_, workers_, lease_, ready_ = sys.argv[1:7]
    types_ = sys.argv[7].split(",") if len(sys.argv) > 7 else list(ALL_TYPES)
    main(dsn_, schema_, node_, int(workers_), float(lease_), ready_, types_)
