"""Several engine nodes on one PostgreSQL database: throughput and cross-node start latency.

Each node is a real process (``tests/postgres/node_driver.py``).  For 1, 2 and 3 nodes with the
same total worker count it measures the throughput of no-op tasks and of CPU-bound tasks
(created in bulk by this process, timed until the last one is gone from the table), and with
two nodes the latency from ``create`` here to the handler starting on a node (the handler
returns its start time; same host, same clock).  Every round repeats each configuration on a
fresh schema; the figures are medians over the rounds, and the ratios compare configurations
measured in the same run, because this machine is shared and noisy.

    .venv/bin/python -m benchmarks.cluster [--dsn postgresql://...] [--rounds 3]

Prints JSON.  Targets (issue 4): 3 nodes lose at most 15 % against 1 node, and the p50
cross-node start latency is under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import taskengine
from tests.postgres import support
from tests.postgres.cluster import Node, start_nodes


def remaining(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "tasks"))
        ).fetchone()
    return int(row[0]) if row else 0


def drain(dsn: str, schema: str, limit: float = 600.0) -> None:
    deadline = time.monotonic() + limit
    while remaining(dsn, schema):
        if time.monotonic() > deadline:
            raise RuntimeError("tasks did not finish")
        time.sleep(0.005)


def timed_batch(
    engine: taskengine.TaskEngine, dsn: str, schema: str, task_type: str, payloads: list[Any]
) -> float:
    """Tasks per second from the first create to the last task gone (retain_for=0)."""
    began = time.perf_counter()
    for start in range(0, len(payloads), 1000):
        engine.create_many(task_type, payloads[start : start + 1000])
    drain(dsn, schema)
    return len(payloads) / (time.perf_counter() - began)


def latencies(engine: taskengine.TaskEngine, samples: int) -> list[float]:
    """Milliseconds from create (here) to the handler starting on a node."""
    found = []
    for _ in range(samples):
        created = time.time()
        task_id = engine.create("started", None, retain_for=None)
        deadline = time.monotonic() + 30
        while True:
            task = engine.get(task_id)
            if task is not None and task.status is taskengine.TaskStatus.SUCCESS:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("latency task did not finish")
            time.sleep(0.002)
        found.append((task.result - created) * 1000)
        time.sleep(0.02)  # the nodes are idle again, as for a lone task
    return found


def measure(
    dsn: str, nodes: int, total_workers: int, task_type: str, args: argparse.Namespace
) -> float | list[float]:
    """One figure of ``nodes`` fresh nodes that handle only ``task_type``, on a fresh schema.

    One type per run: a node with several types moves its worker slots between them on demand,
    and that start-up must not be in the figure.
    """
    schema = support.new_schema_name()
    started: list[Node] = []
    try:
        with tempfile.TemporaryDirectory() as work:
            store = taskengine.PostgresStore(dsn, schema=schema, application_name=schema)
            engine = taskengine.TaskEngine(store)  # creates only; never started
            started += start_nodes(
                dsn,
                schema,
                Path(work),
                nodes,
                total_workers // nodes,
                lease=30.0,
                own_session=False,
                types=(task_type,),
            )
            try:
                if task_type == "started":
                    latencies(engine, total_workers)  # warm every pool
                    return latencies(engine, args.latency_samples)
                if task_type == "noop":
                    payloads: list[Any] = [None] * args.noop_tasks
                else:
                    payloads = [{"seconds": args.cpu_seconds}] * args.cpu_tasks
                timed_batch(engine, dsn, schema, task_type, payloads[: total_workers * 10])
                return timed_batch(engine, dsn, schema, task_type, payloads)
            finally:
                engine.stop()
    finally:
        for node in started:
            node.stop()
        support.drop_schema(dsn, schema)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=os.environ.get(support.DSN_VARIABLE))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=6, help="total over all nodes")
    parser.add_argument("--noop-tasks", type=int, default=3000)
    parser.add_argument("--cpu-tasks", type=int, default=60)
    parser.add_argument("--cpu-seconds", type=float, default=0.05)
    parser.add_argument("--latency-samples", type=int, default=100)
    args = parser.parse_args()
    if not args.dsn:
        raise SystemExit(f"give --dsn or set {support.DSN_VARIABLE}")
    kinds = {"noop_tasks_per_s": "noop", "cpu_tasks_per_s": "spin"}
    runs: dict[str, dict[int, list[float]]] = {kind: {1: [], 2: [], 3: []} for kind in kinds}
    latency_runs: list[list[float]] = []
    for _ in range(args.rounds):
        for kind, task_type in kinds.items():
            for nodes in (1, 2, 3):
                figure = measure(args.dsn, nodes, args.workers, task_type, args)
                assert isinstance(figure, float)
                runs[kind][nodes].append(figure)
        found = measure(args.dsn, 2, args.workers, "started", args)
        assert isinstance(found, list)
        latency_runs.append(found)
    result: dict[str, Any] = {"rounds": args.rounds, "total_workers": args.workers}
    for kind, per_nodes in runs.items():
        medians = {n: statistics.median(values) for n, values in per_nodes.items()}
        result[kind] = {f"{n}_nodes": round(v, 1) for n, v in medians.items()}
        result[kind]["3_vs_1_loss_percent"] = round(100 * (1 - medians[3] / medians[1]), 1)
        result[kind]["per_round"] = {
            f"{n}_nodes": [round(v, 1) for v in values] for n, values in per_nodes.items()
        }
    samples = [ms for found in latency_runs for ms in found]
    result["cross_node_start_latency_ms"] = {
        "samples": len(samples),
        "p50": round(percentile(samples, 0.50), 2),
        "p99": round(percentile(samples, 0.99), 2),
        "p50_per_round": [round(percentile(found, 0.5), 2) for found in latency_runs],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
