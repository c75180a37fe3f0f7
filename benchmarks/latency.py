"""Latency: one task at a time on a warm pool, create -> result round trips, p50 and p99.

taskengine: ``create`` then ``wait`` (MemoryStore, and SqliteStore for reference, where every
create and every finish is a durable commit); ProcessPoolExecutor: ``submit`` then
``result()``.  Each round builds each contender, warms it, and times ``--trips`` sequential
round trips; the round's p50 and p99 are kept, and the figures are medians over rounds.

    .venv/bin/python -m benchmarks.latency [--trips 1000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import taskengine
from benchmarks import common, noop_handlers


def _engine_trips(store: taskengine.stores.TaskStore, trips: int) -> tuple[list[float], float]:
    with taskengine.TaskEngine(store, max_total_workers=1) as engine:
        engine.register_handler("noop", "benchmarks.noop_handlers", "noop", max_worker_count=1)
        for _ in range(20):
            engine.wait(engine.create("noop", None), timeout=60)
        samples = []
        cpu = time.process_time()
        for _ in range(trips):
            began = time.perf_counter()
            engine.wait(engine.create("noop", None), timeout=60)
            samples.append(time.perf_counter() - began)
        return samples, time.process_time() - cpu


def run_memory(trips: int) -> tuple[list[float], float]:
    return _engine_trips(taskengine.MemoryStore(), trips)


def run_sqlite(trips: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        return _engine_trips(taskengine.SqliteStore(Path(tmp) / "latency.db"), trips)


def run_ppe(trips: int) -> tuple[list[float], float]:
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        for _ in range(20):
            pool.submit(noop_handlers.noop, None).result()
        samples = []
        cpu = time.process_time()
        for _ in range(trips):
            began = time.perf_counter()
            pool.submit(noop_handlers.noop, None).result()
            samples.append(time.perf_counter() - began)
        return samples, time.process_time() - cpu


CONTENDERS: dict[str, Callable[[int], tuple[list[float], float]]] = {
    "taskengine_memory": run_memory,
    "taskengine_sqlite": run_sqlite,
    "process_pool_executor": run_ppe,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trips", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="50 trips, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.trips, args.rounds = 50, 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    names = list(CONTENDERS)
    p50: dict[str, list[float]] = {name: [] for name in names}
    p99: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            trips, cpu_seconds = CONTENDERS[name](args.trips)
            cpu[name].append(cpu_seconds / args.trips * 1e6)
            p50[name].append(common.percentile(trips, 0.50) * 1e6)
            p99[name].append(common.percentile(trips, 0.99) * 1e6)
    med50 = {k: common.median(v) for k, v in p50.items()}
    med99 = {k: common.median(v) for k, v in p99.items()}
    ppe50 = med50["process_pool_executor"]
    common.emit(
        {
            "benchmark": "latency",
            "trips": args.trips,
            "rounds": args.rounds,
            "workers": 1,
            "load_average_before": load_before,
            "p50_us_median": {k: common.rounded(v) for k, v in med50.items()},
            "p99_us_median": {k: common.rounded(v) for k, v in med99.items()},
            # CPU time of the coordinator process (every thread) per round trip: the Python
            # work on the path, apart from waiting for the worker and the OS.
            "coordinator_cpu_us_per_trip_median": {
                k: common.rounded(common.median(v)) for k, v in cpu.items()
            },
            "ratios": {
                "memory_p50_vs_ppe_p50": common.ratio(med50["taskengine_memory"], ppe50),
                "memory_p99_vs_ppe_p50": common.ratio(med99["taskengine_memory"], ppe50),
                "memory_p99_vs_memory_p50": common.ratio(
                    med99["taskengine_memory"], med50["taskengine_memory"]
                ),
                "sqlite_p50_vs_ppe_p50": common.ratio(med50["taskengine_sqlite"], ppe50),
                "ppe_p99_vs_ppe_p50": common.ratio(med99["process_pool_executor"], ppe50),
            },
            "samples_p50_us": {k: [common.rounded(x) for x in v] for k, v in p50.items()},
            "samples_p99_us": {k: [common.rounded(x) for x in v] for k, v in p99.items()},
        }
    )


if __name__ == "__main__":
    main()
