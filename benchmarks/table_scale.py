"""Scale of the task table: SqliteStore figures at 1,000 and at 1,000,000 tasks, and their ratio.

Each size runs in a fresh process (so its RSS is its own): a started engine with no handler
(every task stays pending) on a new SqliteStore (``synchronous = FULL``).  Tasks are created with
``create_many`` in batches of 10,000 (95 % of each batch of type ``scale``, 5 % of type
``other``, so the type filter has something to exclude).  Then, each a median over many calls:

* ``get`` of a random stored id;
* the first ``query`` page (type ``scale``, status pending, date_created ascending, 20 a page);
* a deep page: the same query from a cursor placed after the 90 % mark (task 900,000 of 1M);
* due-task selection: ``claim_due`` of 8 tasks, the dispatch transaction (it claims them), and
  ``next_due``;
* coordinator RSS with every task pending.

    .venv/bin/python -m benchmarks.table_scale [--sizes 1000 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import taskengine
from benchmarks import common
from taskengine.core import clock, cursor, models, transitions

BATCH = 10_000
PAGE = 20


def _latency_us(call: Callable[[], object], samples: int) -> dict[str, float]:
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1e6)
    return {
        "median_us": common.rounded(common.median(times)),
        "p99_us": common.rounded(common.percentile(times, 0.99)),
    }


def child(size: int, samples: int) -> dict[str, Any]:
    rng = random.Random(6)
    with tempfile.TemporaryDirectory() as tmp:
        store = taskengine.SqliteStore(Path(tmp) / "scale.db")
        with taskengine.TaskEngine(store, max_total_workers=2) as engine:
            rss_empty = common.rss_mib()
            # Keep only a sample of the ids (and the two around the deep-page mark): a list of
            # every id would be this script's memory, not the coordinator's.
            mark = int(size * 0.9) - 1  # 900,000 of 1M: the 95 % of type scale reach past it
            kept: dict[int, str] = {}
            sampled: list[str] = []
            created = 0
            rates = []
            began_all = time.perf_counter()
            remaining = size
            while remaining > 0:
                batch = min(BATCH, remaining)
                others = batch // 20
                began = time.perf_counter()
                ids = engine.create_many("scale", [None] * (batch - others))
                sampled += rng.sample(ids, min(len(ids), max(1, samples * BATCH // size)))
                for index in (mark, mark + 1):
                    if created <= index < created + len(ids):
                        kept[index] = ids[index - created]
                created += len(ids)
                del ids
                engine.create_many("other", [None] * others)
                rates.append(batch / (time.perf_counter() - began))
                remaining -= batch
            create_seconds = time.perf_counter() - began_all
            rss_loaded = common.rss_mib()

            probe = [rng.choice(sampled) for _ in range(samples)]
            it = iter(probe)
            get = _latency_us(lambda: engine.get(next(it)), samples)

            def first_page() -> None:
                engine.query("scale", "pending", "date_created", "asc", page_size=PAGE)

            spec = cursor.QuerySpec(
                task_type="scale",
                status=models.TaskStatus.PENDING,
                sort_field="date_created",
                direction=models.SortDirection.ASCENDING,
            )
            anchor = engine.get(kept[mark])
            assert anchor is not None
            value, task_id = cursor.sort_key(anchor, "date_created")
            deep_cursor = cursor.encode_cursor(
                spec, cursor.CursorPosition(value=value, task_id=task_id)
            )

            def deep_page() -> taskengine.QueryResult:
                return engine.query(
                    "scale", "pending", "date_created", "asc", cursor=deep_cursor, page_size=PAGE
                )

            first_entity = deep_page().entities[0].id
            if first_entity != kept[mark + 1]:
                raise RuntimeError("the deep page does not start after its cursor")
            first = _latency_us(first_page, samples)
            deep = _latency_us(deep_page, samples)

            node = engine.node_identity

            def claim() -> None:
                now = clock.SystemClock().now()
                store.claim_due("scale", now, 8, transitions.Claim(now, node))

            claims = _latency_us(claim, max(10, samples // 10))
            next_due = _latency_us(lambda: store.next_due(["scale", "other"]), samples)
            rss_final = common.rss_mib()
    return {
        "tasks": size,
        "create_tasks_per_second": round(size / create_seconds),
        "create_batch_tasks_per_second_median": round(common.median(rates)),
        "get": get,
        "query_first_page": first,
        "query_deep_page": deep,
        "deep_page_after": mark + 1,
        "claim_due_8": claims,
        "next_due": next_due,
        "rss_mib": {"empty": rss_empty, "loaded": rss_loaded, "final": rss_final},
    }


def run_size(size: int, samples: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.table_scale",
            "--child",
            str(size),
            "--samples",
            str(samples),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 1_000_000])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--child", type=int)
    parser.add_argument("--quick", action="store_true", help="1,000 and 20,000 tasks")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.samples)))
        return
    if args.quick:
        args.sizes, args.samples = [1000, 20_000], 100
    load_before = [round(x, 2) for x in os.getloadavg()]
    small, large = (run_size(size, args.samples) for size in args.sizes)

    def growth(key: str) -> float | None:
        return common.ratio(large[key]["median_us"], small[key]["median_us"])

    common.emit(
        {
            "benchmark": "table_scale",
            "sizes": args.sizes,
            "samples": args.samples,
            "load_average_before": load_before,
            "small": small,
            "large": large,
            "ratios_large_vs_small": {
                key: growth(key)
                for key in ("get", "query_first_page", "query_deep_page", "claim_due_8", "next_due")
            }
            | {
                "create_tasks_per_second": common.ratio(
                    large["create_tasks_per_second"], small["create_tasks_per_second"]
                )
            },
        }
    )


if __name__ == "__main__":
    main()
