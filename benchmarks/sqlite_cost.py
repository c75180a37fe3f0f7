"""What the SQLite task table itself costs per task, without the engine.

A diagnostic for the target "SqliteStore at least half of MemoryStore's no-op throughput": it
runs the life of a ``retain_for=0`` task (insert, claim, finishing delete) as plain SQL on a
fresh file with SqliteStore's own schema and statements (``taskengine.stores.schema``: the
multi-row INSERT, the claim's UPDATE ... RETURNING, the shared-fence DELETE), in the batch sizes
the engine uses (one ``create_many`` of all tasks, group commits of 128), and prints
the microseconds per task of each step (the fastest of ``--rounds`` runs).  Then it runs the
same once per index, each time without that index, so that the share of every index is visible.
The engine's per-task time on MemoryStore (``overhead.py``) comes on top of this for
SqliteStore; no change in the engine can take these figures away, only a schema with fewer
indexes (and slower queries) could.

    .venv/bin/python -m benchmarks.sqlite_cost [--tasks 10000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from benchmarks import common
from taskengine.core import clock, transitions
from taskengine.stores.sqlite import schema

BATCH = 128
Steps = dict[str, float]


def _rows(tasks: int) -> list[tuple[object, ...]]:
    now = clock.SystemClock().now()
    return [
        schema.to_row(
            transitions.new_task(
                task_id=f"{index:032x}",
                task_type="noop",
                payload_blob=b"\x80\x05N.",
                now=now,
                retry_count=0,
                retry_interval=1.0,
                retain_for=0,
                run_at=None,
            )
        )
        for index in range(tasks)
    ]


def _life_cycle(ddl: tuple[str, ...], rows: list[tuple[object, ...]]) -> Steps:
    """Microseconds per task of each step, on a fresh file with ``ddl``."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "cost.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        for statement in ddl:
            conn.execute(statement)
        began = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for start in range(0, len(rows), schema.INSERT_ROWS):
            chunk = rows[start : start + schema.INSERT_ROWS]
            conn.execute(schema.insert_sql(len(chunk)), [v for row in chunk for v in row])
        conn.execute("COMMIT")
        insert = time.perf_counter() - began
        claim = finish = commit = 0.0
        finished: list[str] = []
        while True:
            conn.execute("BEGIN IMMEDIATE")
            began = time.perf_counter()
            if finished:
                conn.execute(schema.delete_fenced_sql(len(finished)), (*finished, "processing", 1))
            deleted = time.perf_counter()
            selection = ("noop", 2**62, BATCH)
            order = {row[0]: i for i, row in enumerate(conn.execute(schema.DUE_ROWIDS, selection))}
            due = conn.execute(schema.CLAIM_DUE, ("node", 2**40, *selection)).fetchall()
            due.sort(key=lambda row: order[row[-1]])
            claimed = time.perf_counter()
            conn.execute("COMMIT")
            committed = time.perf_counter()
            finish += deleted - began
            claim += claimed - deleted
            commit += committed - claimed
            finished = [row[0] for row in due]
            if not due:
                break
        conn.close()
    per_task = 1e6 / len(rows)
    steps = {
        "insert": insert * per_task,
        "claim": claim * per_task,
        "finish_delete": finish * per_task,
        "commit": commit * per_task,
    }
    steps["total"] = sum(steps.values())
    return steps


def _best_steps(ddl: tuple[str, ...], rows: list[tuple[object, ...]], rounds: int) -> Steps:
    """The fastest of ``rounds`` runs (by total): the one least disturbed by other load."""
    runs = [_life_cycle(ddl, rows) for _ in range(rounds)]
    best = min(runs, key=lambda run: run["total"])
    return {step: common.rounded(value) for step, value in best.items()}


def _index_name(statement: str) -> str:
    return statement.split(" INDEX ", 1)[1].split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 tasks, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.rounds = 500, 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = _rows(args.tasks)
    full = _best_steps(schema.DDL, rows, args.rounds)
    indexes = [i for i, statement in enumerate(schema.DDL) if " INDEX " in statement]
    without = {
        _index_name(schema.DDL[i]): _best_steps(
            schema.DDL[:i] + schema.DDL[i + 1 :], rows, args.rounds
        )
        for i in indexes
    }
    bare = _best_steps(tuple(s for s in schema.DDL if " INDEX " not in s), rows, args.rounds)
    common.emit(
        {
            "benchmark": "sqlite_cost",
            "tasks": args.tasks,
            "rounds": args.rounds,
            "batch": BATCH,
            "load_average_before": load_before,
            "us_per_task_full_schema": full,
            "us_per_task_without_any_index": bare,
            "us_saved_per_task_without_index": {
                name: common.rounded(full["total"] - steps["total"])
                for name, steps in without.items()
            },
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    )


if __name__ == "__main__":
    main()
