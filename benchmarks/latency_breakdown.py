"""Where the time of one create -> result round trip goes (MemoryStore, 1 warm worker).

A diagnostic, not a contest: it wraps a few internal methods of the reactor and the publisher
with timestamps (``time.perf_counter``, one clock for every thread) and prints the median of
each step over ``--trips`` sequential round trips, in microseconds.  The steps follow one task:

    create stores it -> dispatch claims it -> Run sent (both on the creating thread when the
    reactor sleeps and the worker is idle, the usual case here) -> create returns; worker runs
    it, Done arrives -> outcome read -> outcome stored and announced -> wait() returns

It wraps internals by name, so it names a step "missing" rather than failing when one of them
is renamed.

    .venv/bin/python -m benchmarks.latency_breakdown [--trips 2000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import taskengine
from benchmarks import common
from taskengine.coordinator import dispatch, publishing
from taskengine.pool import supervisor

Marks = dict[str, list[float]]
_marks: Marks = {}


def _wrap(owner: type, name: str, label: str) -> bool:
    original = getattr(owner, name, None)
    if original is None:
        return False

    def wrapper(self: object, *args: Any, **kwargs: Any) -> Any:
        _marks.setdefault(label, []).append(time.perf_counter())
        try:
            return original(self, *args, **kwargs)
        finally:
            _marks.setdefault(label + "_end", []).append(time.perf_counter())

    setattr(owner, name, wrapper)
    return True


STEPS: dict[str, Callable[[float, float, float, Marks], float]] = {
    "create_to_dispatch": lambda t0, t1, t2, m: m["dispatch"][0] - t0,
    "dispatch_to_run_sent": lambda t0, t1, t2, m: m["send_run"][0] - m["dispatch"][0],
    "send_run": lambda t0, t1, t2, m: m["send_run_end"][0] - m["send_run"][0],
    "run_sent_to_create_return": lambda t0, t1, t2, m: t1 - m["send_run_end"][0],
    "create_call": lambda t0, t1, t2, m: t1 - t0,
    "worker_round_trip": lambda t0, t1, t2, m: m["receive"][0] - m["send_run_end"][0],
    "read_outcome": lambda t0, t1, t2, m: m["receive_end"][0] - m["receive"][0],
    "store_outcome_to_announce": lambda t0, t1, t2, m: m["publish"][-1] - m["receive_end"][0],
    "announce": lambda t0, t1, t2, m: m["publish_end"][-1] - m["publish"][-1],
    "announce_to_wait_return": lambda t0, t1, t2, m: t2 - m["publish_end"][-1],
    "total": lambda t0, t1, t2, m: t2 - t0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="100 trips")
    args = parser.parse_args()
    if args.quick:
        args.trips = 100
    load_before = [round(x, 2) for x in os.getloadavg()]
    wrapped = [
        _wrap(supervisor.Supervisor, "_send_queued", "send_run"),
        _wrap(supervisor.Supervisor, "_receive", "receive"),
        _wrap(dispatch.Dispatch, "run", "dispatch"),
        _wrap(publishing.Publisher, "publish", "publish"),
    ]
    rows = []
    turns = []
    on_creator: list[bool] = []
    with taskengine.TaskEngine(taskengine.MemoryStore(), max_total_workers=1) as engine:
        engine.register_handler("noop", "benchmarks.noop_handlers", "noop", max_worker_count=1)
        for _ in range(50):
            engine.wait(engine.create("noop", None), timeout=60)
        for _ in range(args.trips):
            _marks.clear()
            t0 = time.perf_counter()
            task_id = engine.create("noop", None)
            t1 = time.perf_counter()
            engine.wait(task_id, timeout=60)
            t2 = time.perf_counter()
            rows.append((t0, t1, t2, {k: list(v) for k, v in _marks.items()}))
            turns.append(len(_marks.get("dispatch", [])))
            sent = _marks.get("send_run_end", [])
            on_creator.append(bool(sent) and sent[0] <= t1)
    steps: dict[str, float | None] = {}
    for name, step in STEPS.items():
        values = []
        for t0, t1, t2, marks in rows:
            try:
                values.append(step(t0, t1, t2, marks) * 1e6)
            except (KeyError, IndexError):
                continue
        steps[name] = common.rounded(statistics.median(values)) if values else None
    common.emit(
        {
            "benchmark": "latency_breakdown",
            "trips": args.trips,
            "load_average_before": load_before,
            "all_steps_instrumented": all(wrapped),
            "median_us": steps,
            "dispatch_calls_per_trip_median": statistics.median(turns),
            # Trips whose Run was sent before create() returned: dispatched on the creating
            # thread (Reactor.wake_for), not by a turn of the reactor thread.
            "share_dispatched_on_creating_thread": common.rounded(
                sum(on_creator) / max(1, len(on_creator))
            ),
        }
    )


if __name__ == "__main__":
    main()
