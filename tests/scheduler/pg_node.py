"""One scheduler node for the multi-node tests (run as ``python -m tests.scheduler.pg_node``).

Arguments: dsn, schema, output file, hang slot index (-1: none).  It prints ``ready`` once its
scheduler is open, reads the first slot (Unix ms) and the run length (s) from stdin, schedules
``tick`` every 0.5 s from that slot, and appends ``<slot-iso> <pid>`` to the output file with
O_APPEND for each firing it wins.  The node that wins the hang slot writes its pid to
``<output>.hung`` and blocks in the callback until it is killed.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

from taskengine import ScheduledTaskTime, TaskScheduler
from taskengine.clock import from_millis
from taskengine.stores.pg_schedules import PgScheduleStore


def main() -> None:
    dsn, schema, output, hang = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    scheduler = TaskScheduler(PgScheduleStore(dsn, schema)).start()
    print("ready", flush=True)
    first_ms, seconds = sys.stdin.readline().split()
    first = from_millis(int(first_ms))
    hang_slot = None if hang < 0 else first.timestamp() + hang * 0.5
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def tick(slot: datetime) -> None:
        os.write(fd, f"{slot.isoformat()} {os.getpid()}\n".encode())
        if hang_slot is not None and slot.timestamp() == hang_slot:
            with open(output + ".hung", "w") as marker:
                marker.write(str(os.getpid()))
            time.sleep(3600)  # killed here, mid-callback

    scheduler.add_task(
        "tick", ScheduledTaskTime(next_trigger_time=first, interval_seconds=0.5), tick
    )
    end = first.timestamp() + float(seconds)
    while time.time() < end:
        time.sleep(0.05)
    scheduler.stop(timeout=5)
    os.close(fd)


if __name__ == "__main__":
    main()
