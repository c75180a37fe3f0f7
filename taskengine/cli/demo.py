"""``taskengine demo``: what ``make demo`` runs (the demo itself is ``taskengine/demo.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from taskengine.cli import common

__all__ = ["add_parser"]


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command."""
    parser = commands.add_parser(
        "demo",
        parents=[shared],
        help="run CPU-heavy demo tasks on SQLite with a live progress bar",
        description="Run a few hundred prime-counting tasks in two pools on a fresh SQLite "
        "file, with live progress and a summary table.",
    )
    parser.add_argument(
        "--db", type=Path, default=Path("taskengine-demo.db"), help="SQLite file (recreated)"
    )
    parser.add_argument("--tasks", type=int, default=240, help="tasks of the plain type")
    parser.add_argument("--flaky-tasks", type=int, default=60, help="tasks of the flaky type")
    parser.add_argument("--workers", type=int, default=2, help="worker processes in total")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from taskengine.cli import demo_run as demo

    if min(args.tasks, args.flaky_tasks) < 0 or args.workers < 1:
        raise common.CliError("task counts must be >= 0 and workers >= 1", common.EXIT_USAGE)
    demo.run_demo(
        args.db, plain_tasks=args.tasks, flaky_tasks=args.flaky_tasks, workers=args.workers
    )
    return common.EXIT_OK
