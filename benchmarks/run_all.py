"""Run the whole benchmark suite: each script in its own process, then JSON, a table, files.

Writes ``latest.json`` (machine facts, every suite's JSON, the targets) and ``summary.md`` into
``--out`` (``benchmarks/results`` for a full run; a ``--quick`` run writes files only when
``--out`` is given, so it never replaces the committed results).  Prints the JSON, then a table.

    .venv/bin/python -m benchmarks.run_all [--quick] [--out DIR] [--only SUITE ...]
        [--cpu-workers 2,4,8,16 --cpu-tasks 400 --cpu-rounds 3 --cpu-noop-tasks 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common, report, targets

#: Suites of the issue, in the order they run.
SUITES = (
    "user_paths",
    "fairness",
    "overhead",
    "cpu_scaling",
    "latency",
    "latency_breakdown",
    "cold_start",
    "table_scale",
    "memory",
    "large_payload",
)
#: Suites other engineers own; run when present, and their failure is recorded, not fatal.
OPTIONAL_SUITES = ("scheduler_precision", "cluster")
HERE = Path(__file__).resolve().parent


def run_suite(name: str, extra: list[str]) -> dict[str, Any]:
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *extra],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        cwd=HERE.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmarks.{name} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    result["wall_seconds"] = round(time.perf_counter() - began, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", nargs="*", choices=SUITES + OPTIONAL_SUITES, default=None)
    parser.add_argument("--cpu-workers", default=None, help="worker counts, e.g. 2,4,8,16")
    parser.add_argument("--cpu-tasks", type=int, default=None)
    parser.add_argument("--cpu-rounds", type=int, default=None)
    parser.add_argument("--cpu-noop-tasks", type=int, default=None)
    args = parser.parse_args()
    out_dir = args.out if args.out is not None else None if args.quick else HERE / "results"
    facts = common.machine_facts()
    suites: dict[str, Any] = {}
    failed: list[str] = []
    chosen = args.only or [*SUITES, *OPTIONAL_SUITES]
    for name in chosen:
        extra = ["--quick"] if args.quick else []
        if name == "cpu_scaling":
            if args.cpu_workers:
                extra += ["--workers", str(args.cpu_workers)]
            if args.cpu_tasks:
                extra += ["--tasks", str(args.cpu_tasks)]
            if args.cpu_rounds:
                extra += ["--rounds", str(args.cpu_rounds)]
            if args.cpu_noop_tasks:
                extra += ["--noop-tasks", str(args.cpu_noop_tasks)]
        if name in OPTIONAL_SUITES:
            if not (HERE / f"{name}.py").exists():
                continue
            try:
                suites[name] = run_suite(name, extra)
            except (RuntimeError, ValueError) as exc:
                suites[name] = {"benchmark": name, "error": str(exc)}
            continue
        print(f"running {name}...", file=sys.stderr, flush=True)
        try:
            suites[name] = run_suite(name, extra)
        except (RuntimeError, ValueError) as exc:
            # Keep going: one broken suite must not throw away the others' figures.
            print(str(exc), file=sys.stderr)
            suites[name] = {"benchmark": name, "error": str(exc)}
            failed.append(name)
    facts["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    ok = {name: suite for name, suite in suites.items() if "error" not in suite}
    results = {
        "machine": facts,
        "quick": args.quick,
        "suites": suites,
        "targets": targets.evaluate(ok),
    }
    print(json.dumps(results, indent=2))
    report.print_table(results)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        (out_dir / "summary.md").write_text(report.markdown(results))
    if failed:
        sys.exit(f"suites failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
