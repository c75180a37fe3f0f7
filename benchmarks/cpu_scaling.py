"""CPU scaling: N tasks of ~50 ms pure-Python CPU each on W workers, against running serially.

The loop size is calibrated first so that one task takes about ``--task-ms`` in this process.
Each round times the serial run, taskengine (MemoryStore, warm pool of W workers) and
ProcessPoolExecutor (warm, W workers), in rotating order.  The speed-up is the median serial
time over the median parallel time of the same run; its limit is W on W idle cores.

    .venv/bin/python -m benchmarks.cpu_scaling [--workers 2 --tasks 40] [--workers 16 --tasks 400]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable

import taskengine
from benchmarks import common, noop_handlers


def calibrate(task_ms: float) -> int:
    """Loop iterations that take about ``task_ms`` milliseconds here (median of 5 probes)."""
    probe = 200_000
    seconds = common.median(common.timed(lambda: noop_handlers.spin(probe)) for _ in range(5))
    return max(1000, int(probe * task_ms / 1000 / seconds))


def run_serial(iterations: int, tasks: int, workers: int) -> float:
    return common.timed(lambda: [noop_handlers.spin(iterations) for _ in range(tasks)])


def run_engine(iterations: int, tasks: int, workers: int) -> float:
    counter = common.FinishCounter()
    with taskengine.TaskEngine(taskengine.MemoryStore(), max_total_workers=workers) as engine:
        engine.register_handler(
            "spin", "benchmarks.noop_handlers", "spin", counter, max_worker_count=workers
        )
        # Warm-up tasks long enough that every worker starts and runs one (starting workers
        # is not part of the figure).
        counter.expect(workers)
        engine.create_many("spin", [iterations // 2] * workers)
        counter.wait(600)
        counter.expect(tasks)
        began = time.perf_counter()
        engine.create_many("spin", [iterations] * tasks)
        counter.wait()
        return time.perf_counter() - began


def run_ppe(iterations: int, tasks: int, workers: int) -> float:
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for future in [pool.submit(noop_handlers.spin, iterations // 2) for _ in range(workers)]:
            future.result()
        began = time.perf_counter()
        for future in [pool.submit(noop_handlers.spin, iterations) for _ in range(tasks)]:
            future.result()
        return time.perf_counter() - began


CONTENDERS: dict[str, Callable[[int, int, int], float]] = {
    "serial": run_serial,
    "taskengine_memory": run_engine,
    "process_pool_executor": run_ppe,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--task-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="8 tasks of ~10 ms, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.task_ms, args.rounds = 8, 10.0, 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    iterations = calibrate(args.task_ms)
    names = list(CONTENDERS)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            samples[name].append(CONTENDERS[name](iterations, args.tasks, args.workers))
    med = {name: common.median(values) for name, values in samples.items()}
    common.emit(
        {
            "benchmark": "cpu_scaling",
            "tasks": args.tasks,
            "workers": args.workers,
            "rounds": args.rounds,
            "cores": os.cpu_count(),
            "task_ms_target": args.task_ms,
            "task_ms_measured": common.rounded(1000 * med["serial"] / args.tasks, 2),
            "iterations": iterations,
            "load_average_before": load_before,
            "seconds_median": {k: round(v, 4) for k, v in med.items()},
            "speedup": {
                "taskengine_memory": common.ratio(med["serial"], med["taskengine_memory"]),
                "process_pool_executor": common.ratio(med["serial"], med["process_pool_executor"]),
            },
            "speedup_limit": min(args.workers, os.cpu_count() or 1),
            "samples_seconds": {k: [round(v, 4) for v in vs] for k, vs in samples.items()},
        }
    )


if __name__ == "__main__":
    main()
