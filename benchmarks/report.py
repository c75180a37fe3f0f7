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
    if "overhead" in suites:
        o = suites["overhead"]
        for name, rate in o["tasks_per_second_median"].items():
            us = o["us_per_task_median"][name]
            rows.append(["overhead", name, f"{rate:,} tasks/s ({us} us/task)"])
    if "cpu_scaling" in suites:
        c = suites["cpu_scaling"]
        for name, speedup in c["speedup"].items():
            figure = f"{speedup}x on {c['workers']} workers ({c['tasks']} tasks)"
            utilisation = c.get("worker_utilisation", {}).get(name)
            if utilisation is not None:
                figure += f", workers busy {utilisation:.1%} of the time"
            ceiling = c.get("speedup_ceiling_at_full_utilisation", {}).get(name)
            if ceiling is not None:
                figure += f", machine ceiling {ceiling}x"
            rows.append(["cpu_scaling", name, figure])
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


def print_table(results: dict[str, Any]) -> None:
    """Print the targets and the headline figures as rich tables (plain text without rich)."""
    try:
        from rich.console import Console
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
    for row in target_rows(results):
        table.add_row(*row)
    console.print(table)
    figures = Table(title="figures (medians)")
    for column in ("suite", "contender", "figure"):
        figures.add_column(column)
    for row in figure_rows(results):
        figures.add_row(*row)
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
