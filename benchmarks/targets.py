"""The targets of the benchmark issue, checked against one run's results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Results = dict[str, Any]


def _get(results: Results, *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _scale(results: Results, part: str, figure: str) -> Any:
    return _get(results, "table_scale", part, figure, "median_us")


def _growth(results: Results, figure: str) -> Any:
    return _get(results, "table_scale", "ratios_large_vs_small", figure)


def _latency_p99_vs_ppe_p50(results: Results) -> Any:
    return _get(results, "latency", "ratios", "memory_p99_vs_ppe_p50")


def _cpu_speedup(results: Results, workers: int) -> Any:
    """taskengine's CPU speed-up at ``workers`` workers; None where that count was skipped or
    ran on fewer cores than workers (a speed-up there measures the machine)."""
    figures = _get(results, "cpu_scaling", "by_workers", str(workers))
    if figures is None:  # a result of the single-count shape
        if _get(results, "cpu_scaling", "workers") != workers:
            return None
        figures = results["cpu_scaling"]
    if "skipped" in figures or "note" in figures:
        return None
    return _get(figures, "speedup", "taskengine_memory")


def _user(results: Results, *path: str) -> Any:
    return _get(results, "user_paths", *path)


def _largest_share_percent(results: Results) -> Any:
    """The most tasks of the heavy batch one worker ran, in per cent of the batch: the worst
    round of every taskengine path and store (one lopsided round is the failure)."""
    shares = _get(results, "fairness", "warm_then_heavy", "max_share_worst_round")
    if not shares:
        return None
    engine = [v for k, v in shares.items() if k.startswith("taskengine_")]
    return round(100 * max(engine), 1) if engine else None


def _mixed_vs_ppe(results: Results) -> Any:
    """The worst makespan ratio to ProcessPoolExecutor of MemoryStore's two paths over both
    mixes (SqliteStore's, which carry an fsync per task, are in the figures)."""
    mixes = _get(results, "fairness", "mixed_durations")
    if not mixes:
        return None
    ratios = [
        value
        for mix in mixes.values()
        for name, value in mix["makespan_vs_ppe"].items()
        if name.startswith("taskengine_memory") and value is not None
    ]
    return max(ratios) if ratios else None


#: (name, how to read the figure, comparison, limit or a function of the results, unit).
TARGETS: list[
    tuple[str, Callable[[Results], Any], str, float | Callable[[Results], float], str]
] = [
    # The paths users take first: one create per task, one task at a time.
    (
        "user path (create loop), MemoryStore: tasks/s vs multiprocessing.Pool",
        lambda r: _user(r, "single_create_memory", "ratios", "memory_vs_multiprocessing_pool"),
        ">=",
        1.0,
        "x",
    ),
    (
        "user path (create loop), SqliteStore full: enqueue/s vs Huey enqueue/s",
        lambda r: _user(r, "single_create_sqlite", "ratios", "enqueue_vs_huey"),
        ">=",
        1.0,
        "x",
    ),
    (
        "user path (create loop), SqliteStore full: end-to-end tasks/s vs Huey",
        lambda r: _user(r, "single_create_sqlite", "ratios", "end_to_end_vs_huey"),
        ">=",
        2.0,
        "x",
    ),
    (
        "user path (create -> wait), SqliteStore: p50 vs ProcessPoolExecutor p50",
        lambda r: _user(r, "round_trip", "ratios", "sqlite_p50_vs_ppe_p50"),
        "<=",
        3.0,
        "x",
    ),
    (
        "user path (create -> wait), MemoryStore: p50 vs ProcessPoolExecutor p50",
        lambda r: _user(r, "round_trip", "ratios", "memory_p50_vs_ppe_p50"),
        "<=",
        1.0,
        "x",
    ),
    (
        "fairness (create loop): speed-up after tiny tasks, 2 workers",
        lambda r: _get(
            r, "fairness", "warm_then_heavy", "speedup", "taskengine_memory_create_loop"
        ),
        ">=",
        1.9,
        "x",
    ),
    (
        "fairness (create_many): speed-up after tiny tasks, 2 workers",
        lambda r: _get(
            r, "fairness", "warm_then_heavy", "speedup", "taskengine_memory_create_many"
        ),
        ">=",
        1.9,
        "x",
    ),
    (
        "fairness: most tasks of the batch on one worker (worst round)",
        _largest_share_percent,
        "<=",
        60.0,
        "%",
    ),
    (
        "fairness: mixed-duration makespan vs ProcessPoolExecutor (MemoryStore, worst)",
        _mixed_vs_ppe,
        "<=",
        1.15,
        "x",
    ),
    # The batch paths.
    (
        "overhead (create_many): MemoryStore tasks/s vs ProcessPoolExecutor",
        lambda r: _get(r, "overhead", "ratios", "memory_vs_process_pool_executor"),
        ">=",
        1.0,
        "x",
    ),
    (
        "overhead (create_many): SqliteStore tasks/s vs MemoryStore",
        lambda r: _get(r, "overhead", "ratios", "sqlite_vs_memory"),
        ">=",
        0.5,
        "x",
    ),
    (
        "overhead (create_many): SqliteStore tasks/s vs Huey (SqliteHuey)",
        lambda r: _get(r, "overhead", "ratios", "sqlite_vs_huey_sqlite"),
        ">=",
        5.0,
        "x",
    ),
    (
        "CPU scaling (create_many): speed-up over serial, 2 workers",
        lambda r: _cpu_speedup(r, 2),
        ">=",
        1.9,
        "x",
    ),
    (
        "CPU scaling (create_many): speed-up over serial, 16 workers (16+ cores)",
        lambda r: _cpu_speedup(r, 16),
        ">=",
        14.0,
        "x",
    ),
    (
        "latency: p50 vs ProcessPoolExecutor p50",
        lambda r: _get(r, "latency", "ratios", "memory_p50_vs_ppe_p50"),
        "<=",
        1.5,
        "x",
    ),
    ("latency: p99 vs ProcessPoolExecutor p50", _latency_p99_vs_ppe_p50, "<=", 3.0, "x"),
    (
        "latency: p99 vs its own p50 (the lenient reading)",
        lambda r: _get(r, "latency", "ratios", "memory_p99_vs_memory_p50"),
        "<=",
        3.0,
        "x",
    ),
    ("1M table: get median", lambda r: _scale(r, "large", "get"), "<=", 5000.0, "us"),
    (
        "1M table: first query page median",
        lambda r: _scale(r, "large", "query_first_page"),
        "<=",
        5000.0,
        "us",
    ),
    (
        "1M table: deep query page (after 900,000) median",
        lambda r: _scale(r, "large", "query_deep_page"),
        "<=",
        10000.0,
        "us",
    ),
    (
        "1M table: coordinator RSS with all tasks pending",
        lambda r: _get(r, "table_scale", "large", "rss_mib", "final"),
        "<=",
        1024.0,
        "MiB",
    ),
    ("1M/1k: get", lambda r: _growth(r, "get"), "<=", 2.0, "x"),
    ("1M/1k: first query page", lambda r: _growth(r, "query_first_page"), "<=", 2.0, "x"),
    ("1M/1k: deep query page", lambda r: _growth(r, "query_deep_page"), "<=", 2.0, "x"),
    ("1M/1k: due-task claim (8 tasks)", lambda r: _growth(r, "claim_due_8"), "<=", 2.0, "x"),
    ("1M/1k: next_due", lambda r: _growth(r, "next_due"), "<=", 2.0, "x"),
]


def evaluate(results: Results) -> list[dict[str, Any]]:
    """One row per target: its measured figure, the limit, and whether it holds."""
    rows = []
    for name, read, comparison, limit, unit in TARGETS:
        value = read(results)
        bound = limit(results) if callable(limit) else limit
        met = None if value is None else value >= bound if comparison == ">=" else value <= bound
        rows.append(
            {
                "target": name,
                "measured": value,
                "comparison": comparison,
                "limit": bound,
                "unit": unit,
                "met": met,
            }
        )
    return rows
