"""The ``taskengine`` command (also ``python -m taskengine``).

Only ``demo`` exists so far; the operator commands (worker, tasks, stats) come with their own
issue.  Logging is configured here, in ``main``, never by the library.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskengine", description="A multiprocess background-task engine."
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ERROR)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run CPU-heavy demo tasks on SQLite with a live progress bar"
    )
    demo.add_argument(
        "--db", type=Path, default=Path("taskengine-demo.db"), help="SQLite file (recreated)"
    )
    demo.add_argument("--tasks", type=int, default=240, help="tasks of the plain type")
    demo.add_argument("--flaky-tasks", type=int, default=60, help="tasks of the flaky type")
    demo.add_argument("--workers", type=int, default=2, help="worker processes in total")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage)."""
    args = _parser().parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        print(f"taskengine: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from taskengine import demo, errors

        if min(args.tasks, args.flaky_tasks) < 0 or args.workers < 1:
            print("taskengine: task counts must be >= 0 and workers >= 1", file=sys.stderr)
            return 2
        try:
            demo.run_demo(
                args.db,
                plain_tasks=args.tasks,
                flaky_tasks=args.flaky_tasks,
                workers=args.workers,
            )
        except errors.TaskEngineError as exc:
            print(f"taskengine: {exc}", file=sys.stderr)
            return 1
    return 0
