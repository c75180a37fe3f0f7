"""Readable forms of a suite run: a rich table on the terminal and a markdown summary."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.3f}" if unit == "x" else f"{value:,.1f}"
    else:
        text = f"{value:,}"
    return f"{text} {unit}".strip() if unit and unit != "x" else f"{text}{unit}"


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[met]


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    return [
        [
            row["target"],
            _fmt(row["measured"], row["unit"]),
            f"{row['comparison']} {_fmt(row['limit'], row['unit'])}",
            _verdict(row["met"]),
        ]
        for row in results["targets"]
    ]


def figure_rows(results: dict[str, Any]) -> list[list[str]]:
    """Headline figures of every suite: (suite, contender or figure, value)."""
    suites = {k: v for k, v in results["suites"].items() if "error" not in v}
    rows: list[list[str]] = [
        [name, "-", "FAILED (see latest.json)"]
        for name, suite in results["suites"].items()
        if "error" in suite
    ]
    # The paths users take first (one create per task), then the batch paths.
    if "user_paths" in suites:
        rows += user_path_rows(suites["user_paths"])
    if "fairness" in suites:
        rows += fairness_rows(suites["fairness"])
    if "overhead" in suites:
        o = suites["overhead"]
        for name, rate in o["tasks_per_second_median"].items():
            us = o["us_per_task_median"][name]
            path = OVERHEAD_PATHS.get(name, "")
            rows.append(["overhead", f"{name} [{path}]", f"{rate:,} tasks/s ({us} us/task)"])
    if "cpu_scaling" in suites:
        rows += cpu_scaling_rows(suites["cpu_scaling"])
    if "latency" in suites:
        lat = suites["latency"]
        for name, p50 in lat["p50_us_median"].items():
            cpu = lat.get("coordinator_cpu_us_per_trip_median", {}).get(name)
            rows.append(
                [
                    "latency",
                    name,
                    f"p50 {p50} us, p99 {lat['p99_us_median'][name]} us, coordinator CPU "
                    f"{cpu} us/trip",
                ]
            )
    if "latency_breakdown" in suites:
        steps = suites["latency_breakdown"]["median_us"]
        text = ", ".join(f"{k} {v}" for k, v in steps.items())
        rows.append(["latency_breakdown", "taskengine_memory (us)", text])
    if "cold_start" in suites:
        for name, ms in suites["cold_start"]["ms_median"].items():
            rows.append(["cold_start", name, f"{ms} ms"])
    if "table_scale" in suites:
        t = suites["table_scale"]
        for part in ("small", "large"):
            s = t[part]
            rows.append(
                [
                    "table_scale",
                    f"{s['tasks']:,} tasks",
                    f"create {s['create_tasks_per_second']:,}/s, get {s['get']['median_us']} us, "
                    f"page {s['query_first_page']['median_us']} us, deep page "
                    f"{s['query_deep_page']['median_us']} us, claim 8 "
                    f"{s['claim_due_8']['median_us']} us, next_due {s['next_due']['median_us']} "
                    f"us, RSS {s['rss_mib']['final']} MiB",
                ]
            )
    if "memory" in suites:
        for name, phases in suites["memory"]["rss_mib_median"].items():
            idle, after = phases["idle"], phases["after"]
            rows.append(
                [
                    "memory",
                    name,
                    f"coordinator {idle['coordinator']} -> {after['coordinator']} MiB, worker "
                    f"{idle['worker']} -> {after['worker']} MiB (idle -> after tasks)",
                ]
            )
    for name in ("scheduler_precision", "cluster"):
        if name in suites:
            rows.append([name, "-", "see latest.json"])
    return rows


#: The path of each overhead contender (overhead.py submits the whole batch at once).
OVERHEAD_PATHS = {
    "taskengine_memory": "create_many",
    "taskengine_sqlite": "create_many",
    "taskengine_sqlite_normal": "create_many",
    "process_pool_executor": "submit per task",
    "multiprocessing_pool": "apply_async per task",
    "loky": "submit per task",
    "huey_sqlite": "enqueue per task",
}


def user_path_rows(u: dict[str, Any]) -> list[list[str]]:
    """user_paths: the create loop on MemoryStore and SqliteStore, and the round trip."""
    rows = []
    memory = u["single_create_memory"]
    for name, rate in memory["tasks_per_second_median"].items():
        rows.append(
            [
                "user_paths",
                f"{name} [{memory['paths'][name]}]",
                f"{rate:,} tasks/s ({memory['us_per_task_median'][name]} us/task)",
            ]
        )
    sqlite = u["single_create_sqlite"]
    for name, rate in sqlite["enqueue_per_second_median"].items():
        figure = f"enqueue {rate:,}/s"
        end_to_end = sqlite["end_to_end_tasks_per_second_median"].get(name)
        if end_to_end is not None:
            figure += f", end to end {end_to_end:,} tasks/s"
        rows.append(["user_paths", f"{name} [{sqlite['paths'][name]}]", figure])
    rows.append(
        [
            "user_paths",
            "fsync of 4 KiB, same disk (the floor of a durable commit)",
            f"p50 {sqlite['fsync_4k_p50_us']} us ({sqlite['fsyncs_per_second_at_p50']:,}/s)",
        ]
    )
    trip = u["round_trip"]
    for name, p50 in trip["p50_us_median"].items():
        rows.append(
            [
                "user_paths",
                f"{name} [round trip: create -> wait, submit -> result]",
                f"p50 {p50} us, p99 {trip['p99_us_median'][name]} us",
            ]
        )
    return rows


def fairness_rows(f: dict[str, Any]) -> list[list[str]]:
    """fairness: the heavy batch after tiny tasks, and the mixed-duration makespans."""
    rows = []
    heavy = f["warm_then_heavy"]
    for name, speedup in heavy["speedup"].items():
        spread = heavy["tasks_per_worker_per_round"][name]
        rows.append(
            [
                "fairness",
                f"{name} [{f['paths'][name]}]",
                f"{speedup}x over serial on {f['workers']} workers after "
                f"{heavy['tiny_tasks_first']} tiny tasks ({heavy['tasks']} tasks of "
                f"{heavy['task_ms_measured']} ms); tasks per worker by round {spread}",
            ]
        )
    for mix, figures in f["mixed_durations"].items():
        for name, seconds in figures["makespan_seconds_median"].items():
            if name == "serial":
                continue
            rows.append(
                [
                    "fairness",
                    f"{name}, {mix} mix ({figures['tasks']} tasks)",
                    f"makespan {seconds} s, {figures['makespan_vs_ppe'][name]}x PPE's, "
                    f"{figures['makespan_vs_lower_bound'][name]}x the lower bound "
                    f"({figures['lower_bound_seconds']} s)",
                ]
            )
    return rows


def cpu_scaling_rows(c: dict[str, Any]) -> list[list[str]]:
    """cpu_scaling at each worker count (the older single-count results have no by_workers)."""
    rows = []
    paths = c.get("paths", {})
    for figures in c.get("by_workers", {str(c["workers"]): c}).values():
        workers = figures.get("workers", c["workers"])
        if "skipped" in figures:
            rows.append(["cpu_scaling", f"{workers} workers", figures["skipped"]])
            continue
        for name, speedup in figures["speedup"].items():
            figure = f"{speedup}x on {workers} workers ({c['tasks']} tasks)"
            utilisation = figures.get("worker_utilisation", {}).get(name)
            if utilisation is not None:
                figure += f", workers busy {utilisation:.1%} of the time"
            ceiling = figures.get("speedup_ceiling_at_full_utilisation", {}).get(name)
            if ceiling is not None:
                figure += f", machine ceiling {ceiling}x"
            if "note" in figures:
                figure += f" ({figures['note']})"
            label = f"{name} [{paths[name]}]" if name in paths else name
            rows.append(["cpu_scaling", label, figure])
        for name, rate in figures.get("noop_tasks_per_second_median", {}).items():
            rows.append(
                ["cpu_scaling", f"{paths.get(name, name)}, {workers} workers", f"{rate:,} tasks/s"]
            )
    return rows


def print_table(results: dict[str, Any]) -> None:
    """Print the targets and the headline figures as rich tables (plain text without rich)."""
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is in the bench and dev extras
        for row in target_rows(results) + figure_rows(results):
            print(" | ".join(row))
        return
    console = Console(stderr=True)
    machine = results["machine"]
    caption = (
        f"{machine['cpu_model']}, {machine['logical_cores']} cores, Python {machine['python']}, "
        f"{machine['date_utc']}, load {machine['load_average']}"
    )
    table = Table(title="taskengine benchmark targets", caption=caption)
    for column in ("target", "measured", "limit", "met"):
        table.add_column(column)
    # Escaped: the paths' [brackets] would otherwise read as rich markup.
    for row in target_rows(results):
        table.add_row(*map(escape, row))
    console.print(table)
    figures = Table(title="figures (medians)")
    for column in ("suite", "contender", "figure"):
        figures.add_column(column)
    for row in figure_rows(results):
        figures.add_row(*map(escape, row))
    console.print(figures)


def markdown(results: dict[str, Any]) -> str:
    """The summary committed next to ``latest.json``."""
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"- Date (UTC): {m['date_utc']}",
        f"- CPU: {m['cpu_model']} ({m['logical_cores']} logical / {m['physical_cores']} "
        "physical cores)",
        f"- Memory: {m['memory_gib']} GiB; Python {m['python']} ({m['implementation']}); "
        f"SQLite {m['sqlite']}; taskengine {m['taskengine']}",
        f"- Platform: {m['platform']}",
        f"- Load average at start: {m['load_average']}; at end: {m.get('load_average_end')}",
        f"- Quick mode: {results['quick']}",
        "",
        "Every figure is a median over repeated runs; every ratio compares figures of this run.",
        "",
        "## Targets",
        "",
        "| target | measured | limit | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in target_rows(results)]
    lines += ["", "## Figures", "", "| suite | contender | figure |", "| --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in figure_rows(results)]
    return "\n".join(lines) + "\n"


def headline(results: dict[str, Any]) -> str:
    """The short table of headline ratios for the README (from one run's results)."""
    m = results["machine"]
    rows = [
        row
        for row in results["targets"]
        if not row["target"].startswith("1M/1k") or row["met"] is False
    ]
    lines = [
        f"Measured {m['date_utc'][:10]} on {m['cpu_model']} ({m['logical_cores']} cores, shared: "
        f"load average {m['load_average'][0]} at the start), Python {m['python']}; "
        "medians, every ratio from one run.",
        "",
        "| target | measured | limit | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {row['target']} | {_fmt(row['measured'], row['unit'])} | "
        f"{row['comparison']} {_fmt(row['limit'], row['unit'])} | {_verdict(row['met'])} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    print(headline(json.loads((source / "latest.json").read_text())))
