"""Per-task overhead: N no-op tasks on 2 workers, taskengine vs ProcessPoolExecutor.

Prints JSON: the median tasks/s of each contender over several rounds, and the ratios the core
issue names (MemoryStore vs ProcessPoolExecutor, SqliteStore vs MemoryStore), all measured in the
same run because this machine is shared and noisy.

    .venv/bin/python -m benchmarks.overhead [--tasks 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path

import taskengine
from benchmarks import noop_handlers


def run_engine(store: taskengine.stores.TaskStore, tasks: int, workers: int) -> float:
    done = threading.Event()
    finished = 0
    lock = threading.Lock()

    def on_change(task: taskengine.BackgroundTask) -> None:
        nonlocal finished
        if task.status.is_final:
            with lock:
                finished += 1
                if finished == tasks:
                    done.set()

    with taskengine.TaskEngine(store, max_total_workers=workers) as engine:
        engine.register_handler(
            "noop", "benchmarks.noop_handlers", "noop", on_change, max_worker_count=workers
        )
        # Warm the pool so that worker start-up is not part of the per-task figure.
        engine.wait(engine.create("noop", None), timeout=60)
        with lock:
            finished = 0
        began = time.perf_counter()
        engine.create_many("noop", [None] * tasks)
        if not done.wait(600):
            raise RuntimeError("tasks did not finish")
        return tasks / (time.perf_counter() - began)


def run_pool_executor(tasks: int, workers: int) -> float:
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pool.submit(noop_handlers.noop, None).result()
        began = time.perf_counter()
        futures = [pool.submit(noop_handlers.noop, None) for _ in range(tasks)]
        for future in futures:
            future.result()
        return tasks / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"ppe": [], "memory": [], "sqlite": []}
    for _ in range(args.rounds):
        samples["ppe"].append(run_pool_executor(args.tasks, args.workers))
        samples["memory"].append(run_engine(taskengine.MemoryStore(), args.tasks, args.workers))
        with tempfile.TemporaryDirectory() as tmp:
            store = taskengine.SqliteStore(Path(tmp) / "bench.db")
            samples["sqlite"].append(run_engine(store, args.tasks, args.workers))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "workers": args.workers,
                "rounds": args.rounds,
                "tasks_per_second_median": {k: round(v) for k, v in medians.items()},
                "us_per_task_median": {k: round(1e6 / v, 1) for k, v in medians.items()},
                "ratio_memory_vs_ppe": round(medians["memory"] / medians["ppe"], 3),
                "ratio_sqlite_vs_memory": round(medians["sqlite"] / medians["memory"], 3),
                "samples": {k: [round(v) for v in vs] for k, vs in samples.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
