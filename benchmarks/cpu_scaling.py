"""CPU scaling: N tasks of ~50 ms pure-Python CPU each on W workers, against running serially.

The loop size is calibrated first so that one task takes about ``--task-ms`` in this process.
Each round times the serial run, taskengine (MemoryStore, warm pool of W workers) and
ProcessPoolExecutor (warm, W workers), in rotating order.  The speed-up is the median serial
time over the median parallel time of the same run; its limit is W on W idle cores.

The machine's speed can drift by more than the few per cent the target leaves (a shared VM
ran the same serial work in 2.15 s and in 1.54 s within one run), so each parallel run also
reports its workers' utilisation: the seconds its workers spent running the tasks, over W times
its wall time.  Both are timed in the same run on the same workers, so a slower or faster
machine moves them together: 1 - utilisation is the share of the run lost to dispatching
(gaps between a worker's tasks, the first and last tasks), whatever the serial baseline did.
taskengine's run times come from its pool statistics, ProcessPoolExecutor's from the tasks.

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
        busy_before = _run_seconds(engine)
        counter.expect(tasks)
        began = time.perf_counter()
        engine.create_many("spin", [iterations] * tasks)
        counter.wait()
        wall = time.perf_counter() - began
        busy = _run_seconds(engine) - busy_before
        BUSY["taskengine_memory"].append(busy)
        UTILISATION["taskengine_memory"].append(busy / (workers * wall))
        return wall


def _run_seconds(engine: taskengine.TaskEngine) -> float:
    """Seconds the pool's workers have spent running attempts so far."""
    facts = engine.stats().of("spin")
    return (facts.mean_run_time or 0.0) * facts.tasks_done


def run_ppe(iterations: int, tasks: int, workers: int) -> float:
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for future in [pool.submit(noop_handlers.spin, iterations // 2) for _ in range(workers)]:
            future.result()
        began = time.perf_counter()
        futures = [pool.submit(noop_handlers.timed_spin, iterations) for _ in range(tasks)]
        busy = sum(future.result() for future in futures)
        wall = time.perf_counter() - began
        BUSY["process_pool_executor"].append(busy)
        UTILISATION["process_pool_executor"].append(busy / (workers * wall))
        return wall


#: Per parallel run: seconds the workers spent in tasks over (workers x wall seconds).
UTILISATION: dict[str, list[float]] = {"taskengine_memory": [], "process_pool_executor": []}
#: Per parallel run: seconds the workers spent in tasks, all of them together.
BUSY: dict[str, list[float]] = {"taskengine_memory": [], "process_pool_executor": []}


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
            "worker_utilisation": {
                name: round(common.median(values), 4) for name, values in UTILISATION.items()
            },
            # How much longer one task takes in a worker while all workers run than alone in
            # one process (the machine's cores slowing each other: shared caches, SMT siblings,
            # other load), and the speed-up that leaves at 100 % utilisation.  Speed-up =
            # ceiling x utilisation: the ceiling is the machine's, the utilisation the engine's.
            "parallel_task_slowdown": {
                name: common.ratio(common.median(values), med["serial"])
                for name, values in BUSY.items()
            },
            "speedup_ceiling_at_full_utilisation": {
                name: common.ratio(args.workers * med["serial"], common.median(values))
                for name, values in BUSY.items()
            },
            "samples_worker_utilisation": {
                name: [round(v, 4) for v in values] for name, values in UTILISATION.items()
            },
            "samples_seconds": {k: [round(v, 4) for v in vs] for k, vs in samples.items()},
        }
    )


if __name__ == "__main__":
    main()
