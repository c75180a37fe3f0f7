"""The paths users take: one ``create`` per task, on one thread, and one task at a time.

``overhead.py`` measures the batch path (``create_many``); most code calls ``create`` once per
task instead, so this script measures that path beside the peers' per-task calls:

* single create, MemoryStore: a loop of ``engine.create`` on one thread, 2 warm workers, the
  batch finished when the state-change callback has seen every task; against
  ``multiprocessing.Pool`` (fork context, ``apply_async`` per task) and ``ProcessPoolExecutor``
  (forkserver, ``submit`` per task), 2 workers each.  Tasks/s.
* single create, SqliteStore at ``synchronous="full"``: the enqueue rate of a ``create`` loop
  with no handler registered (nothing consumes), and while 2 workers consume; the end-to-end
  rate of the consuming run; 4 threads creating at once (no handler); against Huey's
  ``enqueue`` per task into SqliteHuey with ``fsync=True`` (the same durability), with no
  consumer and with its 2-process consumer.  The p50 of one fsync of 4 KiB in the same
  temporary directory is measured in each round too: the floor under a durable commit.
* round trip, one task at a time on 1 warm worker: ``create`` -> ``wait`` (MemoryStore and
  SqliteStore) against ``submit`` -> ``result()`` (the code of ``latency.py``).

Every round runs every contender once, in an order that rotates from round to round; every
figure is a median over rounds and every ratio compares medians of this run.

    .venv/bin/python -m benchmarks.user_paths [--memory-tasks 3000] [--sqlite-tasks 300]
        [--trips 200] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import taskengine
from benchmarks import common, latency, noop_handlers, overhead

#: The peers' start methods: ``multiprocessing.Pool`` as most code creates it on Linux (fork);
#: ``ProcessPoolExecutor`` with forkserver, taskengine's start method.
MP_POOL_CONTEXT = "fork"
PPE_CONTEXT = "forkserver"
#: Threads that call ``create`` at once in the concurrent enqueue figure.
CREATE_THREADS = 4

#: What each contender does per task, reported beside its figures.
PATHS = {
    "taskengine_memory": "create loop (one engine.create per task, one thread)",
    "multiprocessing_pool": f"apply_async per task ({MP_POOL_CONTEXT})",
    "process_pool_executor": f"submit per task ({PPE_CONTEXT})",
    "taskengine_sqlite_no_handler": "create loop, no handler registered (enqueue only)",
    "taskengine_sqlite_consuming": "create loop while 2 workers consume",
    f"taskengine_sqlite_{CREATE_THREADS}_threads": (
        f"create loop on each of {CREATE_THREADS} threads at once, no handler registered"
    ),
    "huey_sqlite_no_consumer": "enqueue per task, no consumer running (enqueue only)",
    "huey_sqlite_consuming": "enqueue per task while a 2-process consumer runs",
    "fsync_4k": "os.fsync after a 4 KiB write, same directory as the stores",
    "round_trip": "create -> wait (submit -> result), one task at a time, 1 warm worker",
}

Figures = dict[str, float]


def _warm(engine: taskengine.TaskEngine, counter: common.FinishCounter, workers: int) -> None:
    """Run a few tasks first, so that starting the workers is not part of any figure."""
    counter.expect(workers * 4)
    for _ in range(workers * 4):
        engine.create("noop", None)
    counter.wait(120)


def _create_loop(
    store: taskengine.stores.TaskStore, tasks: int, workers: int, *, consume: bool
) -> Figures:
    """A loop of ``create`` on this thread: the enqueue rate, and (when a handler consumes) the
    end-to-end rate, from the first create to the callback's sight of the last finish."""
    counter = common.FinishCounter()
    with taskengine.TaskEngine(store, max_total_workers=workers) as engine:
        if consume:
            engine.register_handler(
                "noop", "benchmarks.noop_handlers", "noop", counter, max_worker_count=workers
            )
            _warm(engine, counter, workers)
            counter.expect(tasks)
        began = time.perf_counter()
        for _ in range(tasks):
            engine.create("noop", None)
        enqueued = time.perf_counter() - began
        figures = {"enqueue_per_second": tasks / enqueued}
        if consume:
            counter.wait()
            figures["end_to_end_per_second"] = tasks / (time.perf_counter() - began)
        return figures


def run_memory(tasks: int, workers: int) -> Figures:
    return _create_loop(taskengine.MemoryStore(), tasks, workers, consume=True)


def _sqlite_store(directory: str) -> taskengine.SqliteStore:
    return taskengine.SqliteStore(Path(directory) / "bench.db", synchronous="full")


def run_sqlite_no_handler(tasks: int, workers: int) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        return _create_loop(_sqlite_store(tmp), tasks, workers, consume=False)


def run_sqlite_consuming(tasks: int, workers: int) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        return _create_loop(_sqlite_store(tmp), tasks, workers, consume=True)


def run_sqlite_threads(tasks: int, workers: int) -> Figures:
    """``CREATE_THREADS`` threads each run a ``create`` loop at once: creates/s in total."""
    per_thread = max(1, tasks // CREATE_THREADS)
    with (
        tempfile.TemporaryDirectory() as tmp,
        taskengine.TaskEngine(_sqlite_store(tmp), max_total_workers=workers) as engine,
    ):
        # Released together, so the figure covers only the time all threads contend.
        start = threading.Barrier(CREATE_THREADS + 1)
        failures: list[BaseException] = []

        def creator() -> None:
            start.wait()
            try:
                for _ in range(per_thread):
                    engine.create("noop", None)
            except BaseException as exc:  # reported below: a failed thread voids the figure
                failures.append(exc)

        threads = [threading.Thread(target=creator) for _ in range(CREATE_THREADS)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        if failures:
            raise RuntimeError(f"a creating thread failed: {failures[0]!r}")
        return {"enqueue_per_second": per_thread * CREATE_THREADS / elapsed}


def run_huey_no_consumer(tasks: int, workers: int) -> Figures:
    """Huey's ``enqueue`` per task into SqliteHuey (fsync on) with nothing consuming."""
    from benchmarks import huey_app

    with tempfile.TemporaryDirectory() as tmp:
        _, noop = huey_app.make_huey(str(Path(tmp) / "huey.db"))
        began = time.perf_counter()
        for _ in range(tasks):
            noop(None)  # type: ignore[operator]
        return {"enqueue_per_second": tasks / (time.perf_counter() - began)}


def run_huey_consuming(tasks: int, workers: int) -> Figures:
    result = overhead.huey_round(tasks, workers)
    HUEY_LOST.append(tasks - result.done)
    return {
        "enqueue_per_second": tasks / result.enqueue_seconds,
        "end_to_end_per_second": result.done / result.end_to_end_seconds,
    }


def run_fsync(samples: int = 200) -> Figures:
    """The p50 of ``os.fsync`` after a 4 KiB write, in the directory the stores use."""
    block = os.urandom(4096)
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(Path(tmp) / "fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            times = []
            for index in range(samples):
                # Each write lands on a new block, as a growing WAL's does.
                os.pwrite(fd, block, index * len(block))
                began = time.perf_counter()
                os.fsync(fd)
                times.append(time.perf_counter() - began)
        finally:
            os.close(fd)
    return {"p50_us": common.percentile(times, 0.5) * 1e6}


def _executor_loop(pool: concurrent.futures.Executor, tasks: int, workers: int) -> Figures:
    for future in [pool.submit(noop_handlers.noop, None) for _ in range(workers * 4)]:
        future.result()
    began = time.perf_counter()
    futures = [pool.submit(noop_handlers.noop, None) for _ in range(tasks)]
    for future in futures:
        future.result()
    return {"end_to_end_per_second": tasks / (time.perf_counter() - began)}


def run_ppe(tasks: int, workers: int) -> Figures:
    context = multiprocessing.get_context(PPE_CONTEXT)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return _executor_loop(pool, tasks, workers)


def run_mp_pool(tasks: int, workers: int) -> Figures:
    with multiprocessing.get_context(MP_POOL_CONTEXT).Pool(workers) as pool:
        for warm in [pool.apply_async(noop_handlers.noop, (None,)) for _ in range(workers * 4)]:
            warm.get()
        began = time.perf_counter()
        results = [pool.apply_async(noop_handlers.noop, (None,)) for _ in range(tasks)]
        for result in results:
            result.get()
        return {"end_to_end_per_second": tasks / (time.perf_counter() - began)}


def round_trip(run: Callable[[int], tuple[list[float], float]], trips: int) -> Figures:
    """p50 and p99 of one round of ``latency.py``'s sequential round trips."""
    samples, _ = run(trips)
    return {
        "p50_us": common.percentile(samples, 0.50) * 1e6,
        "p99_us": common.percentile(samples, 0.99) * 1e6,
    }


#: Tasks each consuming Huey round lost (enqueued, never finished), reported with the figures.
HUEY_LOST: list[int] = []


def _rounded(figures: dict[str, dict[str, float]], key: str, digits: int = 0) -> dict[str, float]:
    return {
        name: round(values[key], digits) if digits else round(values[key])
        for name, values in figures.items()
        if key in values
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--memory-tasks", type=int, default=3000)
    parser.add_argument("--sqlite-tasks", type=int, default=300)
    parser.add_argument("--trips", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.memory_tasks, args.sqlite_tasks, args.trips, args.rounds = 200, 40, 30, 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    mem, sql, w = args.memory_tasks, args.sqlite_tasks, args.workers
    threads_name = f"taskengine_sqlite_{CREATE_THREADS}_threads"
    contenders: dict[str, Callable[[], Figures]] = {
        "memory:taskengine_memory": functools.partial(run_memory, mem, w),
        "memory:multiprocessing_pool": functools.partial(run_mp_pool, mem, w),
        "memory:process_pool_executor": functools.partial(run_ppe, mem, w),
        "sqlite:taskengine_sqlite_no_handler": functools.partial(run_sqlite_no_handler, sql, w),
        "sqlite:taskengine_sqlite_consuming": functools.partial(run_sqlite_consuming, sql, w),
        f"sqlite:{threads_name}": functools.partial(run_sqlite_threads, sql, w),
        "sqlite:huey_sqlite_no_consumer": functools.partial(run_huey_no_consumer, sql, w),
        "sqlite:huey_sqlite_consuming": functools.partial(run_huey_consuming, sql, w),
        "sqlite:fsync_4k": run_fsync,
        "trip:taskengine_memory": functools.partial(round_trip, latency.run_memory, args.trips),
        "trip:taskengine_sqlite": functools.partial(round_trip, latency.run_sqlite, args.trips),
        "trip:process_pool_executor": functools.partial(round_trip, latency.run_ppe, args.trips),
    }
    samples = common.round_robin(contenders, args.rounds)
    med = common.medians_of(samples)

    def section(prefix: str) -> dict[str, dict[str, float]]:
        return {k.split(":", 1)[1]: v for k, v in med.items() if k.startswith(prefix + ":")}

    def section_samples(prefix: str) -> dict[str, list[dict[str, float]]]:
        return {
            k.split(":", 1)[1]: [{f: round(x, 1) for f, x in run.items()} for run in runs]
            for k, runs in samples.items()
            if k.startswith(prefix + ":")
        }

    memory, sqlite, trip = section("memory"), section("sqlite"), section("trip")
    memory_rate = _rounded(memory, "end_to_end_per_second")
    enqueue = _rounded(sqlite, "enqueue_per_second")
    end_to_end = _rounded(sqlite, "end_to_end_per_second")
    fsync_p50 = sqlite["fsync_4k"]["p50_us"]
    p50 = _rounded(trip, "p50_us", 1)
    p99 = _rounded(trip, "p99_us", 1)
    common.emit(
        {
            "benchmark": "user_paths",
            "workers": w,
            "rounds": args.rounds,
            "load_average_before": load_before,
            "single_create_memory": {
                "tasks": mem,
                "paths": {name: PATHS[name] for name in memory},
                "tasks_per_second_median": memory_rate,
                "us_per_task_median": {k: common.rounded(1e6 / v) for k, v in memory_rate.items()},
                "ratios": {
                    "memory_vs_multiprocessing_pool": common.ratio(
                        memory_rate["taskengine_memory"], memory_rate["multiprocessing_pool"]
                    ),
                    "memory_vs_process_pool_executor": common.ratio(
                        memory_rate["taskengine_memory"], memory_rate["process_pool_executor"]
                    ),
                },
                "samples": section_samples("memory"),
            },
            "single_create_sqlite": {
                "tasks": sql,
                "synchronous": "full",
                "huey_fsync": True,
                "paths": {name: PATHS[name] for name in sqlite},
                "enqueue_per_second_median": enqueue,
                "end_to_end_tasks_per_second_median": end_to_end,
                "fsync_4k_p50_us": common.rounded(fsync_p50),
                # A commit that waits for one fsync cannot happen more often than this.
                "fsyncs_per_second_at_p50": round(1e6 / fsync_p50),
                "ratios": {
                    "enqueue_vs_huey": common.ratio(
                        enqueue["taskengine_sqlite_no_handler"], enqueue["huey_sqlite_no_consumer"]
                    ),
                    "enqueue_while_consuming_vs_huey": common.ratio(
                        enqueue["taskengine_sqlite_consuming"], enqueue["huey_sqlite_consuming"]
                    ),
                    "end_to_end_vs_huey": common.ratio(
                        end_to_end["taskengine_sqlite_consuming"],
                        end_to_end["huey_sqlite_consuming"],
                    ),
                    f"{CREATE_THREADS}_threads_vs_1_thread": common.ratio(
                        enqueue[threads_name], enqueue["taskengine_sqlite_no_handler"]
                    ),
                },
                "huey_lost_tasks_per_round": HUEY_LOST,
                "samples": section_samples("sqlite"),
            },
            "round_trip": {
                "trips": args.trips,
                "path": PATHS["round_trip"],
                "p50_us_median": p50,
                "p99_us_median": p99,
                "ratios": {
                    "memory_p50_vs_ppe_p50": common.ratio(
                        p50["taskengine_memory"], p50["process_pool_executor"]
                    ),
                    "sqlite_p50_vs_ppe_p50": common.ratio(
                        p50["taskengine_sqlite"], p50["process_pool_executor"]
                    ),
                },
                "samples": section_samples("trip"),
            },
        }
    )


if __name__ == "__main__":
    main()
