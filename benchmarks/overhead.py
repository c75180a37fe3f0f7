"""Per-task overhead: N no-op tasks on 2 workers, taskengine against its peers.

Contenders (all with warm workers, each round running every contender once, round-robin):
taskengine with MemoryStore and with SqliteStore (``create_many``, completion seen through the
state-change callback; also SqliteStore with ``synchronous="normal"`` for reference, to show
the share of the fsync), ``concurrent.futures.ProcessPoolExecutor``, ``multiprocessing.Pool``
(both with the forkserver start method that taskengine uses), loky's executor, and Huey with
SqliteHuey and a consumer of 2 worker processes (``enqueue`` one task at a time, as Huey has no
batch enqueue; completion seen as its result count).

Prints JSON: the median tasks/s and microseconds per task of each contender, and the ratios of
the targets, every ratio computed from medians of the same run.

    .venv/bin/python -m benchmarks.overhead [--tasks 10000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import taskengine
from benchmarks import common, noop_handlers


def run_engine(store: taskengine.stores.TaskStore, tasks: int, workers: int) -> float:
    counter = common.FinishCounter()
    with taskengine.TaskEngine(store, max_total_workers=workers) as engine:
        engine.register_handler(
            "noop", "benchmarks.noop_handlers", "noop", counter, max_worker_count=workers
        )
        # Warm both workers so that start-up is not part of the per-task figure.
        counter.expect(workers * 4)
        engine.create_many("noop", [None] * (workers * 4))
        counter.wait(120)
        counter.expect(tasks)
        began = time.perf_counter()
        engine.create_many("noop", [None] * tasks)
        counter.wait()
        return tasks / (time.perf_counter() - began)


def run_memory(tasks: int, workers: int) -> float:
    return run_engine(taskengine.MemoryStore(), tasks, workers)


def run_sqlite(tasks: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return run_engine(taskengine.SqliteStore(Path(tmp) / "bench.db"), tasks, workers)


def run_sqlite_normal(tasks: int, workers: int) -> float:
    """For reference, not a target: SqliteStore without the fsync of each commit."""
    with tempfile.TemporaryDirectory() as tmp:
        store = taskengine.SqliteStore(Path(tmp) / "bench.db", synchronous="normal")
        return run_engine(store, tasks, workers)


def _warm_executor(pool: concurrent.futures.Executor, workers: int) -> None:
    for future in [pool.submit(noop_handlers.noop, None) for _ in range(workers * 4)]:
        future.result()


def _time_executor(pool: concurrent.futures.Executor, tasks: int) -> float:
    began = time.perf_counter()
    futures = [pool.submit(noop_handlers.noop, None) for _ in range(tasks)]
    for future in futures:
        future.result()
    return tasks / (time.perf_counter() - began)


def run_ppe(tasks: int, workers: int) -> float:
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        _warm_executor(pool, workers)
        return _time_executor(pool, tasks)


def run_loky(tasks: int, workers: int) -> float:
    import loky

    pool = loky.ProcessPoolExecutor(workers)
    try:
        _warm_executor(pool, workers)
        return _time_executor(pool, tasks)
    finally:
        pool.shutdown(wait=True)


def run_mp_pool(tasks: int, workers: int) -> float:
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers) as pool:
        pool.map(noop_handlers.noop, [None] * (workers * 4))
        began = time.perf_counter()
        results = [pool.apply_async(noop_handlers.noop, (None,)) for _ in range(tasks)]
        for result in results:
            result.get()
        return tasks / (time.perf_counter() - began)


def _enqueue_retrying(task: object) -> None:
    """Enqueue one Huey task, again while its SQLite file stays locked (counted)."""
    import sqlite3

    while True:
        try:
            task(None)  # type: ignore[operator]
            return
        except sqlite3.OperationalError:
            HUEY_ENQUEUE_RETRIES.append(1)


@dataclasses.dataclass(frozen=True)
class HueyRound:
    """One timed Huey batch: when the last enqueue returned, when the last result arrived."""

    tasks: int
    enqueue_seconds: float
    end_to_end_seconds: float
    done: int


def huey_round(tasks: int, workers: int) -> HueyRound:
    """Enqueue ``tasks`` no-ops one at a time into SqliteHuey while a consumer of ``workers``
    processes runs them (warmed first); time the enqueue loop and the whole batch."""
    from benchmarks import huey_app

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "huey.db")
        huey, noop = huey_app.make_huey(path)
        consumer = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.huey_app", path, str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        try:

            def wait_results(count: int) -> tuple[int, float]:
                """Results stored and when the last arrived; gives up when the queue is
                empty and no result came for 3 s (Huey drops a task whose write times out on
                the SQLite lock: each loss is counted, never waited for forever)."""
                seen, last = 0, time.perf_counter()
                while seen < count:
                    if consumer.poll() is not None:
                        raise RuntimeError("the Huey consumer stopped")
                    now = huey.result_count()
                    if now != seen:
                        seen, last = now, time.perf_counter()
                    elif time.perf_counter() - last > 3.0 and huey.pending_count() == 0:
                        break
                    time.sleep(0.002)
                return seen, last

            for _ in range(workers * 4):
                noop(None)  # type: ignore[operator]
            wait_results(workers * 4)
            huey.storage.flush_results()
            began = time.perf_counter()
            for _ in range(tasks):
                _enqueue_retrying(noop)
            enqueued = time.perf_counter()
            done, last = wait_results(tasks)
            return HueyRound(tasks, enqueued - began, last - began, done)
        finally:
            consumer.send_signal(signal.SIGINT)
            try:
                consumer.wait(30)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()


def run_huey(tasks: int, workers: int) -> float:
    result = huey_round(tasks, workers)
    HUEY_LOST.append(tasks - result.done)
    return result.done / result.end_to_end_seconds


#: Tasks each Huey round lost (enqueued, never finished), reported with the figures.
HUEY_LOST: list[int] = []
#: Enqueues Huey refused with "database is locked" and that were tried again.
HUEY_ENQUEUE_RETRIES: list[int] = []

CONTENDERS: dict[str, Callable[[int, int], float]] = {
    "taskengine_memory": run_memory,
    "taskengine_sqlite": run_sqlite,
    "taskengine_sqlite_normal": run_sqlite_normal,
    "process_pool_executor": run_ppe,
    "multiprocessing_pool": run_mp_pool,
    "loky": run_loky,
    "huey_sqlite": run_huey,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", choices=sorted(CONTENDERS), default=None)
    parser.add_argument("--quick", action="store_true", help="300 tasks, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.rounds = 300, 1
    names = args.only or list(CONTENDERS)
    load_before = [round(x, 2) for x in os.getloadavg()]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        # Rotate the order each round so no contender always runs first (or last).
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            samples[name].append(CONTENDERS[name](args.tasks, args.workers))
    med = {name: common.median(values) for name, values in samples.items()}
    ratios = {}
    if {"taskengine_memory", "process_pool_executor"} <= med.keys():
        ratios["memory_vs_process_pool_executor"] = common.ratio(
            med["taskengine_memory"], med["process_pool_executor"]
        )
    if {"taskengine_sqlite", "taskengine_memory"} <= med.keys():
        ratios["sqlite_vs_memory"] = common.ratio(
            med["taskengine_sqlite"], med["taskengine_memory"]
        )
    if {"taskengine_sqlite_normal", "taskengine_memory"} <= med.keys():
        ratios["sqlite_normal_vs_memory"] = common.ratio(
            med["taskengine_sqlite_normal"], med["taskengine_memory"]
        )
    if {"taskengine_sqlite", "huey_sqlite"} <= med.keys():
        ratios["sqlite_vs_huey_sqlite"] = common.ratio(med["taskengine_sqlite"], med["huey_sqlite"])
    common.emit(
        {
            "benchmark": "overhead",
            "tasks": args.tasks,
            "workers": args.workers,
            "rounds": args.rounds,
            "load_average_before": load_before,
            "tasks_per_second_median": {k: round(v) for k, v in med.items()},
            "us_per_task_median": {k: common.rounded(1e6 / v) for k, v in med.items()},
            "ratios": ratios,
            "samples_tasks_per_second": {k: [round(v) for v in vs] for k, vs in samples.items()},
            "huey_lost_tasks_per_round": HUEY_LOST,
            "huey_enqueue_retries": len(HUEY_ENQUEUE_RETRIES),
        }
    )


if __name__ == "__main__":
    main()
