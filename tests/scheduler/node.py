"""One scheduler process for the multi-node and restart tests (``python -m tests.scheduler.node``).

Arguments: a PostgreSQL dsn and schema, or a SQLite path and ``-``; the output file; the hang
slot index (-1: none); the interval in seconds (0.5 by default).  It prints ``ready`` once its
scheduler is open, reads the first slot (Unix ms) and the run length (s) from stdin, schedules
``tick`` every 0.5 s from that slot, and appends ``<slot-iso> <pid>`` to the output file with
O_APPEND for each firing it wins.  The node that wins the hang slot writes its pid to
``<output>.hung`` and blocks in the callback until it is killed.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta

from taskengine import ScheduledTaskTime, SqliteStore, TaskScheduler
from taskengine.core.clock import from_millis
from taskengine.stores.postgres.schedules import PgScheduleStore


def main() -> None:
    target, schema, output, hang = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
    store = PgScheduleStore(target, schema) if schema != "-" else SqliteStore(target)
    scheduler = TaskScheduler(store).start()
    print("ready", flush=True)
    first_ms, seconds = sys.stdin.readline().split()
    first = from_millis(int(first_ms))
    hang_slot = None if hang < 0 else first + timedelta(seconds=hang * interval)
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def tick(slot: datetime) -> None:
        os.write(fd, f"{slot.isoformat()} {os.getpid()}\n".encode())
        if slot == hang_slot:
            with open(output + ".hung", "w") as marker:
                marker.write(str(os.getpid()))
            time.sleep(3600)  # killed here, mid-callback

    scheduler.add_task(
        "tick", ScheduledTaskTime(next_trigger_time=first, interval_seconds=interval), tick
    )
    end = first.timestamp() + float(seconds)
    while time.time() < end:
        time.sleep(0.05)
    scheduler.stop(timeout=5)
    os.close(fd)


if __name__ == "__main__":
    main()
