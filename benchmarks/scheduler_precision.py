"""Firing precision of TaskScheduler: lateness of N firings, against a stdlib peer, same run.

Lateness is the time from a slot's due time to the moment its callback starts.  The peer is
the best plain-stdlib equivalent: ``sched.scheduler`` re-arming each event at previous slot +
interval (no drift) and sleeping with ``time.sleep``.  Also measured: the CPU time the
scheduler's process spends over a few idle seconds with one schedule an hour away.

    .venv/bin/python -m benchmarks.scheduler_precision [--firings 200] [--interval 0.05]
                                                      [--store memory|sqlite]

Prints one JSON object (milliseconds): p50, p90, p99 and max lateness for each contender, the
ratio of their p99s, and the idle CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sched
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

import taskengine


def _summary(lateness_ms: list[float]) -> dict[str, float]:
    ordered = sorted(lateness_ms)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "firings": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(cuts[89], 3),
        "p99_ms": round(cuts[98], 3),
        "max_ms": round(ordered[-1], 3),
        "min_ms": round(ordered[0], 3),
    }


def run_taskengine(firings: int, interval: float, store: object) -> list[float]:
    lateness: list[float] = []
    done = threading.Event()

    def tick(slot: datetime) -> None:
        lateness.append((datetime.now(UTC) - slot) / timedelta(milliseconds=1))
        if len(lateness) == firings:
            done.set()

    with taskengine.TaskScheduler(store) as scheduler:
        scheduler.add_task("bench", taskengine.ScheduledTaskTime(interval_seconds=interval), tick)
        done.wait(firings * interval * 10 + 30)
        scheduler.remove_task("bench")
    return lateness[:firings]


def run_stdlib(firings: int, interval: float) -> list[float]:
    lateness: list[float] = []
    timer = sched.scheduler(time.time, time.sleep)
    first = time.time() + interval

    def tick(due: float) -> None:
        lateness.append((time.time() - due) * 1000)
        if len(lateness) < firings:
            timer.enterabs(due + interval, 0, tick, (due + interval,))

    timer.enterabs(first, 0, tick, (first,))
    timer.run()
    return lateness


def idle_cpu_seconds(seconds: float) -> float:
    with taskengine.TaskScheduler() as scheduler:
        scheduler.add_task("far", taskengine.ScheduledTaskTime(interval_hours=1), lambda: None)
        process = psutil.Process()
        before = process.cpu_times()
        time.sleep(seconds)  # the main thread sleeps too: what is spent is the scheduler's
        after = process.cpu_times()
    return (after.user - before.user) + (after.system - before.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--firings", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = None if args.store == "memory" else taskengine.SqliteStore(Path(folder) / "s.db")
        ours = _summary(run_taskengine(args.firings, args.interval, store))
    peer = _summary(run_stdlib(args.firings, args.interval))
    idle = idle_cpu_seconds(args.idle_seconds)
    print(
        json.dumps(
            {
                "benchmark": "scheduler_precision",
                "interval_s": args.interval,
                "store": args.store,
                "cpu_count": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "taskengine": ours,
                "stdlib_sched": peer,
                "p99_ratio_taskengine_to_stdlib": round(
                    ours["p99_ms"] / max(peer["p99_ms"], 1e-3), 2
                ),
                "idle_cpu_ms_per_s": round(idle / args.idle_seconds * 1000, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
