"""Memory: coordinator RSS and per-worker RSS, idle and after N no-op tasks, 2 workers.

Each sample runs in a fresh process: the coordinator (taskengine with MemoryStore or
SqliteStore, or a ProcessPoolExecutor for reference) starts 2 warm workers; RSS is read with
psutil when idle, and again after ``--tasks`` no-op tasks have finished.  Figures in MiB, medians
over rounds; "worker" is the median over the workers of a sample.

    .venv/bin/python -m benchmarks.memory [--tasks 10000] [--rounds 3] [--quick]
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
from pathlib import Path
from typing import Any

import psutil

import taskengine
from benchmarks import common, noop_handlers

NAMES = ("taskengine_memory", "taskengine_sqlite", "process_pool_executor")
WORKERS = 2


def _snapshot(pids: list[int]) -> dict[str, float]:
    return {
        "coordinator": common.rss_mib(),
        "worker": common.median(common.rss_mib(pid) for pid in pids),
    }


def _engine(store: taskengine.stores.TaskStore, tasks: int) -> dict[str, Any]:
    counter = common.FinishCounter()
    with taskengine.TaskEngine(store, max_total_workers=WORKERS) as engine:
        engine.register_handler(
            "noop", "benchmarks.noop_handlers", "noop", counter, max_worker_count=WORKERS
        )
        counter.expect(WORKERS * 4)
        engine.create_many("noop", [None] * (WORKERS * 4))
        counter.wait(120)
        pids = common.worker_pids()
        idle = _snapshot(pids)
        counter.expect(tasks)
        engine.create_many("noop", [None] * tasks)
        counter.wait()
        return {"idle": idle, "after": _snapshot(common.worker_pids()), "workers": len(pids)}


def child(name: str, tasks: int) -> dict[str, Any]:
    if name == "process_pool_executor":
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
            for future in [pool.submit(noop_handlers.noop, None) for _ in range(WORKERS * 4)]:
                future.result()
            # Its workers are the children of the forkserver that are not the resource tracker.
            pids = [p.pid for p in pool._processes.values()]
            idle = _snapshot(pids)
            for future in [pool.submit(noop_handlers.noop, None) for _ in range(tasks)]:
                future.result()
            return {"idle": idle, "after": _snapshot(pids), "workers": len(pids)}
    if name == "taskengine_memory":
        return _engine(taskengine.MemoryStore(), tasks)
    with tempfile.TemporaryDirectory() as tmp:
        return _engine(taskengine.SqliteStore(Path(tmp) / "memory.db"), tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=NAMES)
    parser.add_argument("--quick", action="store_true", help="300 tasks, 1 round")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tasks)))
        return
    if args.quick:
        args.tasks, args.rounds = 300, 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    names = list(NAMES)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.memory",
                    "--child",
                    name,
                    "--tasks",
                    str(args.tasks),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=900,
                env={**os.environ, "PYTHONPATH": os.getcwd()},
            )
            samples[name].append(json.loads(out.stdout))
    rss = {
        name: {
            phase: {
                role: common.rounded(common.median(s[phase][role] for s in runs))
                for role in ("coordinator", "worker")
            }
            for phase in ("idle", "after")
        }
        for name, runs in samples.items()
    }
    common.emit(
        {
            "benchmark": "memory",
            "tasks": args.tasks,
            "workers": WORKERS,
            "rounds": args.rounds,
            "total_system_mib": round(psutil.virtual_memory().total / common.MIB),
            "load_average_before": load_before,
            "rss_mib_median": rss,
            "samples": samples,
        }
    )


if __name__ == "__main__":
    main()
