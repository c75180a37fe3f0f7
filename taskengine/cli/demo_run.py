"""``taskengine demo``: a few hundred CPU-heavy tasks on the embedded SQLite default.

Two task types with different pool sizes count primes in ranges; one of them fails now and then
and is retried.  A live progress bar follows the state-change callbacks, and a summary table
ends the run: tasks per status, attempts, wall time, and the speed-up over running the same
handlers one after another (the sum of the handlers' own CPU time divided by the wall time).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path
from typing import Any

import taskengine

__all__ = ["run_demo"]

_PLAIN = "primes"
_FLAKY = "primes-flaky"
_CHUNK = 25_000


def _payloads(count: int, start: int, flaky_every: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "start": start + i * _CHUNK,
            "stop": start + (i + 1) * _CHUNK,
            "flaky": bool(flaky_every) and i % flaky_every == 0,
        }
        for i in range(count)
    ]


def _all_tasks(engine: taskengine.TaskEngine, task_type: str) -> list[taskengine.BackgroundTask]:
    tasks: list[taskengine.BackgroundTask] = []
    cursor = None
    while True:
        page = engine.query(task_type=task_type, cursor=cursor, page_size=1000)
        tasks.extend(page.entities)
        cursor = page.cursor
        if cursor is None:
            return tasks


def run_demo(
    database: Path, *, plain_tasks: int = 240, flaky_tasks: int = 60, workers: int = 2
) -> dict[str, Any]:
    """Run the demo against a fresh SQLite file and print its progress and summary.

    Returns:
        the summary figures (also printed as a table).
    """
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
        from rich.table import Table
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise SystemExit("the demo needs rich: pip install 'taskengine[demo]'") from exc

    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    console = Console()
    finished: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def on_change(task: taskengine.BackgroundTask) -> None:
        if task.status.is_final:
            with lock:
                finished[task.type] += 1

    console.print(
        f"[bold]taskengine demo[/]: {plain_tasks + flaky_tasks} prime-counting tasks on "
        f"SQLite ({database}), {os.cpu_count()} CPU(s)"
    )
    began = time.monotonic()
    with taskengine.TaskEngine(
        taskengine.SqliteStore(database), max_total_workers=workers
    ) as engine:
        engine.register_handler(
            _PLAIN, "taskengine.demo_handlers", "count_primes", on_change, max_worker_count=workers
        )
        engine.register_handler(
            _FLAKY,
            "taskengine.demo_handlers",
            "count_primes_flaky",
            on_change,
            max_worker_count=1,
        )
        for task_type, payloads in (
            (_PLAIN, _payloads(plain_tasks, 0)),
            (_FLAKY, _payloads(flaky_tasks, 2_000_000, flaky_every=4)),
        ):
            engine.create_many(
                task_type, payloads, retain_for=None, retry_interval=0.2, retry_count=3
            )
        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            bars = {
                _PLAIN: progress.add_task(f"{_PLAIN} (pool of {workers})", total=plain_tasks),
                _FLAKY: progress.add_task(f"{_FLAKY} (pool of 1)", total=flaky_tasks),
            }
            totals = {_PLAIN: plain_tasks, _FLAKY: flaky_tasks}
            while True:
                with lock:
                    done = dict(finished)
                for task_type, bar in bars.items():
                    progress.update(bar, completed=done.get(task_type, 0))
                if all(done.get(t, 0) >= n for t, n in totals.items()):
                    break
                time.sleep(0.1)
        wall = time.monotonic() - began
        tasks = _all_tasks(engine, _PLAIN) + _all_tasks(engine, _FLAKY)
    statuses = collections.Counter(task.status.value for task in tasks)
    cpu = sum(task.result["cpu_seconds"] for task in tasks if task.result is not None)
    summary = {
        "tasks": len(tasks),
        "statuses": dict(statuses),
        "attempts": sum(task.attempts for task in tasks),
        "retried": sum(1 for task in tasks if task.attempts > 1),
        "primes": sum(task.result["primes"] for task in tasks if task.result is not None),
        "wall_seconds": round(wall, 2),
        "serial_seconds": round(cpu, 2),
        "speedup": round(cpu / wall, 2) if wall else 0.0,
    }
    table = Table(title="taskengine demo summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for status in taskengine.TaskStatus:
        table.add_row(f"tasks {status.value}", str(statuses.get(status.value, 0)))
    table.add_row("attempts (all tasks)", str(summary["attempts"]))
    table.add_row("tasks that needed a retry", str(summary["retried"]))
    table.add_row("primes found", str(summary["primes"]))
    table.add_row("wall time", f"{wall:.2f} s")
    table.add_row("handlers' CPU time (serial estimate)", f"{cpu:.2f} s")
    table.add_row("speed-up over serial", f"{summary['speedup']:.2f}x")
    console.print(table)
    return summary
