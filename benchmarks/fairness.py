"""Fair dispatch: does a batch of CPU tasks spread over the workers, and how close to the bound?

Warm-up-then-heavy: 2 warm workers; first a few tiny tasks of the same type (so that the engine
has learned short run times), then 40 CPU tasks of ~50 ms each (the loop of ``cpu_scaling.py``,
calibrated here).  Reported: the speed-up over running the 40 serially in one process, and how
many tasks each worker ran (the handler returns ``os.getpid()``): a dispatcher that trusts the
short run times it learned can hand the whole batch to one worker.  taskengine runs it with
``create_many`` and with a loop of ``create``, on MemoryStore and on SqliteStore; the peers
(``ProcessPoolExecutor``, ``multiprocessing.Pool``, loky) submit per task after the same warm-up.

Mixed durations, on the same warm pools right after: a bimodal batch (90 % ~1 ms, 10 % ~50 ms,
shuffled with a fixed seed) and one long task (~200 ms) in the middle of many ~1 ms ones.  The
makespan (first submit to last finish) of each contender, against ProcessPoolExecutor's, and
against the lower bound max(total work / workers, the longest task), the work timed by running
the batch serially in the same round.

Every round runs every contender once, in an order that rotates from round to round; figures
are medians over rounds and ratios compare medians of this run.

    .venv/bin/python -m benchmarks.fairness [--tasks 40] [--task-ms 50] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import multiprocessing
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import taskengine
from benchmarks import common, cpu_scaling, noop_handlers

#: Tiny tasks run before the heavy batch: enough for any run-time estimate to settle on them.
TINY_TASKS = 20
TINY_ITERATIONS = 100
#: The mixes: fixed seed, so that every contender and every round runs the same order.
SEED = 20261202
SHORT_MS, LONG_MS, ONE_LONG_MS = 1.0, 50.0, 200.0
START_METHOD = "forkserver"

PATHS = {
    "serial": "one process, a plain loop",
    "taskengine_memory_create_many": "create_many (MemoryStore)",
    "taskengine_memory_create_loop": "create loop (MemoryStore)",
    "taskengine_sqlite_create_many": "create_many (SqliteStore, synchronous=full)",
    "taskengine_sqlite_create_loop": "create loop (SqliteStore, synchronous=full)",
    "process_pool_executor": f"submit per task ({START_METHOD})",
    "multiprocessing_pool": f"apply_async per task ({START_METHOD})",
    "loky": "submit per task",
}

Batch = Sequence[int]


class Workload:
    """The loop sizes of every batch, from one calibration."""

    def __init__(self, tasks: int, task_ms: float, short_tasks: int) -> None:
        per_ms = cpu_scaling.calibrate(task_ms) / task_ms
        self.heavy_iterations = int(per_ms * task_ms)
        self.heavy = [self.heavy_iterations] * tasks
        short, long_ = int(per_ms * SHORT_MS), int(per_ms * LONG_MS)
        longs = max(1, short_tasks // 9)  # 90 % short, 10 % long
        bimodal = [short] * short_tasks + [long_] * longs
        random.Random(SEED).shuffle(bimodal)
        self.mixes: dict[str, list[int]] = {
            "bimodal": bimodal,
            "one_long": (
                [short] * (short_tasks // 2)
                + [int(per_ms * ONE_LONG_MS)]
                + [short] * (short_tasks - short_tasks // 2)
            ),
        }


class ResultCounter(common.FinishCounter):
    """A finish counter that also keeps each successful task's result (a worker's pid)."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[Any] = []
        self._results_lock = threading.Lock()

    def __call__(self, task: taskengine.BackgroundTask) -> None:
        if task.status.is_final:
            with self._results_lock:
                self.results.append(task.result)
        super().__call__(task)

    def expect(self, target: int) -> None:
        with self._results_lock:
            self.results = []
        super().expect(target)


def _spread(pids: Sequence[Any]) -> dict[str, Any]:
    """How many of the batch's tasks each worker ran, most first, and the largest share."""
    counts = sorted(collections.Counter(pids).values(), reverse=True)
    return {"tasks_per_worker": counts, "max_share": counts[0] / len(pids)}


def run_serial(work: Workload, workers: int) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "heavy_seconds": common.timed(lambda: [noop_handlers.spin(n) for n in work.heavy])
    }
    for name, mix in work.mixes.items():
        figures[f"{name}_seconds"] = common.timed(
            lambda mix=mix: [noop_handlers.spin(n) for n in mix]
        )
    return figures


def run_engine(
    store: taskengine.stores.TaskStore, batch: bool, work: Workload, workers: int
) -> dict[str, Any]:
    """Warm both workers, teach short run times, then time the heavy batch and the mixes."""
    counter = ResultCounter()

    def submit(payloads: list[int]) -> None:
        if batch:
            engine.create_many("spin", payloads)
        else:
            for payload in payloads:
                engine.create("spin", payload)

    def timed_batch(payloads: list[int]) -> tuple[float, list[Any]]:
        counter.expect(len(payloads))
        began = time.perf_counter()
        submit(payloads)
        counter.wait()
        return time.perf_counter() - began, list(counter.results)

    with taskengine.TaskEngine(store, max_total_workers=workers) as engine:
        engine.register_handler(
            "spin", "benchmarks.noop_handlers", "spin_pid", counter, max_worker_count=workers
        )
        # Tasks long enough that every worker starts and runs one (as cpu_scaling warms).
        timed_batch([work.heavy_iterations // 2] * workers)
        timed_batch([TINY_ITERATIONS] * TINY_TASKS)
        seconds, pids = timed_batch(work.heavy)
        figures: dict[str, Any] = {"heavy_seconds": seconds, **_spread(pids)}
        for name, mix in work.mixes.items():
            figures[f"{name}_seconds"] = timed_batch(mix)[0]
        return figures


def run_memory(batch: bool, work: Workload, workers: int) -> dict[str, Any]:
    return run_engine(taskengine.MemoryStore(), batch, work, workers)


def run_sqlite(batch: bool, work: Workload, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = taskengine.SqliteStore(Path(tmp) / "fairness.db", synchronous="full")
        return run_engine(store, batch, work, workers)


def _run_submitting(
    submit: Callable[[int], Callable[[], Any]], work: Workload, workers: int
) -> dict[str, Any]:
    """The peers' run: ``submit(iterations)`` returns a callable that waits for the result."""

    def timed_batch(payloads: list[int]) -> tuple[float, list[Any]]:
        began = time.perf_counter()
        waits = [submit(payload) for payload in payloads]
        results = [wait() for wait in waits]
        return time.perf_counter() - began, results

    timed_batch([work.heavy_iterations // 2] * workers)
    timed_batch([TINY_ITERATIONS] * TINY_TASKS)
    seconds, pids = timed_batch(work.heavy)
    figures: dict[str, Any] = {"heavy_seconds": seconds, **_spread(pids)}
    for name, mix in work.mixes.items():
        figures[f"{name}_seconds"] = timed_batch(mix)[0]
    return figures


def _run_executor(
    pool: concurrent.futures.Executor, work: Workload, workers: int
) -> dict[str, Any]:
    return _run_submitting(lambda n: pool.submit(noop_handlers.spin_pid, n).result, work, workers)


def run_ppe(work: Workload, workers: int) -> dict[str, Any]:
    context = multiprocessing.get_context(START_METHOD)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return _run_executor(pool, work, workers)


def run_loky(work: Workload, workers: int) -> dict[str, Any]:
    import loky

    pool = loky.ProcessPoolExecutor(workers)
    try:
        return _run_executor(pool, work, workers)
    finally:
        pool.shutdown(wait=True)


def run_mp_pool(work: Workload, workers: int) -> dict[str, Any]:
    with multiprocessing.get_context(START_METHOD).Pool(workers) as pool:
        return _run_submitting(
            lambda n: pool.apply_async(noop_handlers.spin_pid, (n,)).get, work, workers
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--task-ms", type=float, default=50.0)
    parser.add_argument("--short-tasks", type=int, default=180, help="~1 ms tasks in a mix")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.task_ms, args.short_tasks, args.rounds = 8, 10.0, 18, 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    work = Workload(args.tasks, args.task_ms, args.short_tasks)
    w = args.workers
    contenders: dict[str, Callable[[], dict[str, Any]]] = {
        "serial": functools.partial(run_serial, work, w),
        "taskengine_memory_create_many": functools.partial(run_memory, True, work, w),
        "taskengine_memory_create_loop": functools.partial(run_memory, False, work, w),
        "taskengine_sqlite_create_many": functools.partial(run_sqlite, True, work, w),
        "taskengine_sqlite_create_loop": functools.partial(run_sqlite, False, work, w),
        "process_pool_executor": functools.partial(run_ppe, work, w),
        "multiprocessing_pool": functools.partial(run_mp_pool, work, w),
        "loky": functools.partial(run_loky, work, w),
    }
    samples = common.round_robin(contenders, args.rounds)
    seconds = {
        figure: {name: common.median(run[figure] for run in runs) for name, runs in samples.items()}
        for figure in ("heavy_seconds", *(f"{mix}_seconds" for mix in work.mixes))
    }
    heavy = seconds["heavy_seconds"]
    parallel = [name for name in contenders if name != "serial"]
    # The worst round of each contender: one lopsided round is the failure the issue saw.
    max_share = {name: max(run["max_share"] for run in samples[name]) for name in parallel}
    mixes: dict[str, Any] = {}
    for mix, sizes in work.mixes.items():
        makespan = seconds[f"{mix}_seconds"]
        work_seconds = makespan["serial"]
        longest = work_seconds * max(sizes) / sum(sizes)
        bound = max(work_seconds / w, longest)
        mixes[mix] = {
            "tasks": len(sizes),
            "makespan_seconds_median": {k: round(v, 4) for k, v in makespan.items()},
            "total_work_seconds": round(work_seconds, 4),
            "longest_task_seconds": round(longest, 4),
            "lower_bound_seconds": round(bound, 4),
            "makespan_vs_ppe": {
                name: common.ratio(makespan[name], makespan["process_pool_executor"])
                for name in parallel
            },
            "makespan_vs_lower_bound": {
                name: common.ratio(makespan[name], bound) for name in parallel
            },
        }
    common.emit(
        {
            "benchmark": "fairness",
            "workers": w,
            "rounds": args.rounds,
            "cores": os.cpu_count(),
            "load_average_before": load_before,
            "paths": PATHS,
            "warm_then_heavy": {
                "tiny_tasks_first": TINY_TASKS,
                "tasks": args.tasks,
                "task_ms_target": args.task_ms,
                "task_ms_measured": common.rounded(1000 * heavy["serial"] / args.tasks, 2),
                "seconds_median": {k: round(v, 4) for k, v in heavy.items()},
                "speedup": {name: common.ratio(heavy["serial"], heavy[name]) for name in parallel},
                "speedup_limit": min(w, os.cpu_count() or 1),
                "max_share_worst_round": {k: round(v, 3) for k, v in max_share.items()},
                "tasks_per_worker_per_round": {
                    name: [run["tasks_per_worker"] for run in samples[name]] for name in parallel
                },
            },
            "mixed_durations": mixes,
            "samples_seconds": {
                name: [
                    {k: round(v, 4) for k, v in run.items() if k.endswith("_seconds")}
                    for run in runs
                ]
                for name, runs in samples.items()
            },
        }
    )


if __name__ == "__main__":
    main()
