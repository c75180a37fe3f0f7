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


def _cpu_target(results: Results) -> float:
    workers = _get(results, "cpu_scaling", "workers") or 2
    return 14.0 if workers >= 16 else 1.9


#: (name, how to read the figure, comparison, limit or a function of the results, unit).
TARGETS: list[
    tuple[str, Callable[[Results], Any], str, float | Callable[[Results], float], str]
] = [
    (
        "overhead: MemoryStore tasks/s vs ProcessPoolExecutor",
        lambda r: _get(r, "overhead", "ratios", "memory_vs_process_pool_executor"),
        ">=",
        1.0,
        "x",
    ),
    (
        "overhead: SqliteStore tasks/s vs MemoryStore",
        lambda r: _get(r, "overhead", "ratios", "sqlite_vs_memory"),
        ">=",
        0.5,
        "x",
    ),
    (
        "overhead: SqliteStore tasks/s vs Huey (SqliteHuey)",
        lambda r: _get(r, "overhead", "ratios", "sqlite_vs_huey_sqlite"),
        ">=",
        5.0,
        "x",
    ),
    (
        "CPU scaling: speed-up over serial",
        lambda r: _get(r, "cpu_scaling", "speedup", "taskengine_memory"),
        ">=",
        _cpu_target,
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
