"""Cold start: engine start + first result, against ProcessPoolExecutor, each in a fresh process.

Every sample runs in a new interpreter (so no forkserver or worker is left from an earlier
sample); the clock starts after the imports and stops at the first result: for taskengine,
``TaskEngine(store)`` + ``start`` + ``register_handler`` + ``create`` + ``wait``; for the executor,
construction + ``submit`` + ``result()``.  Both use the forkserver start method.

    .venv/bin/python -m benchmarks.cold_start [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import taskengine
from benchmarks import common, noop_handlers

NAMES = ("taskengine_memory", "taskengine_sqlite", "process_pool_executor")


def child(name: str) -> float:
    """One cold start in this process; seconds to the first result."""
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        if name == "process_pool_executor":
            context = multiprocessing.get_context("forkserver")
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
                pool.submit(noop_handlers.noop, None).result()
                return time.perf_counter() - began
        store: taskengine.stores.TaskStore = (
            taskengine.MemoryStore()
            if name == "taskengine_memory"
            else taskengine.SqliteStore(Path(tmp) / "cold.db")
        )
        with taskengine.TaskEngine(store, max_total_workers=2) as engine:
            engine.register_handler("noop", "benchmarks.noop_handlers", "noop")
            engine.wait(engine.create("noop", None), timeout=60)
            return time.perf_counter() - began


def sample(name: str) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.cold_start", "--child", name],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    return float(json.loads(out.stdout)["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", choices=NAMES)
    parser.add_argument("--quick", action="store_true", help="1 round")
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"seconds": child(args.child)}))
        return
    if args.quick:
        args.rounds = 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    names = list(NAMES)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            samples[name].append(sample(name))
    med = {name: common.median(values) for name, values in samples.items()}
    common.emit(
        {
            "benchmark": "cold_start",
            "rounds": args.rounds,
            "load_average_before": load_before,
            "ms_median": {k: common.rounded(v * 1000) for k, v in med.items()},
            "ratios": {
                "memory_vs_ppe": common.ratio(
                    med["taskengine_memory"], med["process_pool_executor"]
                ),
                "sqlite_vs_ppe": common.ratio(
                    med["taskengine_sqlite"], med["process_pool_executor"]
                ),
            },
            "samples_ms": {k: [common.rounded(x * 1000) for x in v] for k, v in samples.items()},
        }
    )


if __name__ == "__main__":
    main()
