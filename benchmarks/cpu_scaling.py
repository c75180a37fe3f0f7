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

``--workers`` takes several counts (``2,4,8,16`` by default).  The serial run is timed once per
round and shared by every count; a count above the machine's cores is skipped with a note (a
speed-up there measures the cores, not the engine), or with ``--beyond-cores`` measured and
marked.  For each count measured, the no-op throughput (MemoryStore, warm workers) is timed too,
with ``create_many`` and with a loop of ``create``.  The top-level figures are those of the
largest count measured; ``by_workers`` holds every count's.

    .venv/bin/python -m benchmarks.cpu_scaling [--workers 2 --tasks 40]
    .venv/bin/python -m benchmarks.cpu_scaling --workers 2,4,8,16 --tasks 400   # 16 cores
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import taskengine
from benchmarks import common, noop_handlers


def calibrate(task_ms: float) -> int:
    """Loop iterations that take about ``task_ms`` milliseconds here (median of 5 probes)."""
    probe = 200_000
    seconds = common.median(common.timed(lambda: noop_handlers.spin(probe)) for _ in range(5))
    return max(1000, int(probe * task_ms / 1000 / seconds))


def run_serial(iterations: int, tasks: int) -> float:
    return common.timed(lambda: [noop_handlers.spin(iterations) for _ in range(tasks)])


def run_engine(iterations: int, tasks: int, workers: int) -> CpuRun:
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
        return CpuRun(wall, _run_seconds(engine) - busy_before)


def _run_seconds(engine: taskengine.TaskEngine) -> float:
    """Seconds the pool's workers have spent running attempts so far."""
    facts = engine.stats().of("spin")
    return (facts.mean_run_time or 0.0) * facts.tasks_done


def run_ppe(iterations: int, tasks: int, workers: int) -> CpuRun:
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for future in [pool.submit(noop_handlers.spin, iterations // 2) for _ in range(workers)]:
            future.result()
        began = time.perf_counter()
        futures = [pool.submit(noop_handlers.timed_spin, iterations) for _ in range(tasks)]
        busy = sum(future.result() for future in futures)
        return CpuRun(time.perf_counter() - began, busy)


def run_noop(batch: bool, tasks: int, workers: int) -> float:
    """No-op tasks/s on ``workers`` warm workers (MemoryStore), by ``create_many`` or a loop
    of ``create``; the batch is finished when the state-change callback has seen every task."""
    counter = common.FinishCounter()
    with taskengine.TaskEngine(taskengine.MemoryStore(), max_total_workers=workers) as engine:
        engine.register_handler(
            "noop", "benchmarks.noop_handlers", "noop", counter, max_worker_count=workers
        )
        counter.expect(workers * 4)
        engine.create_many("noop", [None] * (workers * 4))
        counter.wait(600)
        counter.expect(tasks)
        began = time.perf_counter()
        if batch:
            engine.create_many("noop", [None] * tasks)
        else:
            for _ in range(tasks):
                engine.create("noop", None)
        counter.wait()
        return tasks / (time.perf_counter() - began)


@dataclasses.dataclass(frozen=True)
class CpuRun:
    """One parallel run: its wall seconds, and the seconds its workers spent in tasks."""

    wall: float
    busy: float


#: The parallel CPU contenders (both submit the whole batch at once: ``create_many``).
CPU_CONTENDERS: dict[str, Callable[[int, int, int], CpuRun]] = {
    "taskengine_memory": run_engine,
    "process_pool_executor": run_ppe,
}
#: What each figure's contender does per task.
PATHS = {
    "serial": "one process, a plain loop",
    "taskengine_memory": "create_many (MemoryStore)",
    "process_pool_executor": "submit per task (forkserver)",
    "noop_create_many": "create_many (MemoryStore), no-op tasks",
    "noop_create_loop": "create loop (MemoryStore), no-op tasks",
}


def worker_counts(text: str) -> list[int]:
    """``"2,4,8,16"`` as a sorted list of distinct positive counts."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 2,4,8,16, got {text!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"expected counts >= 1, got {text!r}")
    return counts


def _cpu_figures(
    workers: int, tasks: int, serial: float, runs: dict[str, list[CpuRun]]
) -> dict[str, Any]:
    """The speed-up and utilisation figures of one worker count (medians over rounds)."""
    wall = {name: common.median(r.wall for r in values) for name, values in runs.items()}
    busy = {name: [r.busy for r in values] for name, values in runs.items()}
    utilisation = {
        name: [r.busy / (workers * r.wall) for r in values] for name, values in runs.items()
    }
    return {
        "seconds_median": {"serial": round(serial, 4), **{k: round(v, 4) for k, v in wall.items()}},
        "speedup": {name: common.ratio(serial, seconds) for name, seconds in wall.items()},
        "speedup_limit": min(workers, os.cpu_count() or 1),
        "worker_utilisation": {
            name: round(common.median(values), 4) for name, values in utilisation.items()
        },
        # How much longer one task takes in a worker while all workers run than alone in
        # one process (the machine's cores slowing each other: shared caches, SMT siblings,
        # other load), and the speed-up that leaves at 100 % utilisation.  Speed-up =
        # ceiling x utilisation: the ceiling is the machine's, the utilisation the engine's.
        "parallel_task_slowdown": {
            name: common.ratio(common.median(values), serial) for name, values in busy.items()
        },
        "speedup_ceiling_at_full_utilisation": {
            name: common.ratio(workers * serial, common.median(values))
            for name, values in busy.items()
        },
        "samples_worker_utilisation": {
            name: [round(v, 4) for v in values] for name, values in utilisation.items()
        },
        "samples_seconds": {
            name: [round(r.wall, 4) for r in values] for name, values in runs.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument(
        "--workers", type=worker_counts, default=[2, 4, 8, 16], help="counts, e.g. 2,4,8,16"
    )
    parser.add_argument("--task-ms", type=float, default=50.0)
    parser.add_argument("--noop-tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--beyond-cores",
        action="store_true",
        help="also measure counts above the core count (marked: not a scaling figure)",
    )
    parser.add_argument("--quick", action="store_true", help="8 tasks of ~10 ms, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.task_ms, args.noop_tasks, args.rounds = 8, 10.0, 200, 1
    cores = os.cpu_count() or 1
    measured = [w for w in args.workers if w <= cores or args.beyond_cores]
    if not measured:
        # Nothing fits the machine: measure the most it has rather than print nothing.
        measured = [cores]
    notes = {
        w: f"{w} workers on {cores} cores: not meaningful, skipped"
        for w in args.workers
        if w not in measured
    }
    notes.update(
        {
            w: f"{w} workers on {cores} cores: measured, but oversubscribed (not a scaling figure)"
            for w in measured
            if w > cores
        }
    )
    load_before = [round(x, 2) for x in os.getloadavg()]
    iterations = calibrate(args.task_ms)
    contenders: dict[str, Callable[[], Any]] = {
        "serial": functools.partial(run_serial, iterations, args.tasks)
    }
    for w in measured:
        for name, run in CPU_CONTENDERS.items():
            contenders[f"{w}:{name}"] = functools.partial(run, iterations, args.tasks, w)
        contenders[f"{w}:noop_create_many"] = functools.partial(run_noop, True, args.noop_tasks, w)
        contenders[f"{w}:noop_create_loop"] = functools.partial(run_noop, False, args.noop_tasks, w)
    samples = common.round_robin(contenders, args.rounds)
    serial = common.median(samples["serial"])
    by_workers: dict[str, dict[str, Any]] = {}
    for w in args.workers:
        if w not in measured:
            by_workers[str(w)] = {"workers": w, "skipped": notes[w]}
            continue
        runs = {name: samples[f"{w}:{name}"] for name in CPU_CONTENDERS}
        noop = {
            name: round(common.median(samples[f"{w}:{name}"]))
            for name in ("noop_create_many", "noop_create_loop")
        }
        by_workers[str(w)] = {
            "workers": w,
            **({"note": notes[w]} if w in notes else {}),
            **_cpu_figures(w, args.tasks, serial, runs),
            "noop_tasks": args.noop_tasks,
            "noop_tasks_per_second_median": noop,
            "samples_noop_tasks_per_second": {
                name: [round(v) for v in samples[f"{w}:{name}"]] for name in noop
            },
        }
    # The top-level figures are those of the largest count measured (the headline scaling).
    headline = max(measured)
    common.emit(
        {
            "benchmark": "cpu_scaling",
            "tasks": args.tasks,
            "workers": headline,
            "worker_counts": args.workers,
            "rounds": args.rounds,
            "cores": cores,
            "paths": PATHS,
            "notes": [notes[w] for w in args.workers if w in notes],
            "task_ms_target": args.task_ms,
            "task_ms_measured": common.rounded(1000 * serial / args.tasks, 2),
            "iterations": iterations,
            "load_average_before": load_before,
            **{k: v for k, v in by_workers[str(headline)].items() if k != "workers"},
            "samples_serial_seconds": [round(v, 4) for v in samples["serial"]],
            "by_workers": by_workers,
        }
    )


if __name__ == "__main__":
    main()
