"""The ``taskengine`` command (also ``python -m taskengine``).

One module per command: ``demo.py``, ``worker.py``, ``tasks.py``, ``stats.py``; ``common.py``
holds the store URL and output helpers, ``logs.py`` the logging set-up (done here, in ``main``,
never by the library).  Exit statuses: 0 success, 1 failure, 2 usage error.  An error is one
line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from taskengine.cli import common, logs
from taskengine.cli import demo as demo_command
from taskengine.cli import stats as stats_command
from taskengine.cli import tasks as tasks_command
from taskengine.cli import worker as worker_command
from taskengine.core import errors

__all__ = ["build_parser", "main"]

_EPILOG = (
    "The store is named by --store or the TASKENGINE_STORE variable: sqlite:///path.db "
    "(default sqlite:///taskengine.db), memory: or postgresql://... "
    "Exit status: 0 ok, 1 failure, 2 usage error."
)


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On sub-commands the defaults are suppressed, so an option given before the command is
    # not overwritten by the sub-command's default.
    default_level = argparse.SUPPRESS if suppress else "WARNING"
    default_debug = argparse.SUPPRESS if suppress else False
    parser.add_argument(
        "--log-level",
        default=default_level,
        metavar="LEVEL",
        help="log records at LEVEL and above to stderr (DEBUG, INFO, WARNING, ERROR)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default_debug,
        help="print the traceback of an error, not only its one-line message",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="taskengine",
        description="A multiprocess background-task engine: run worker nodes, inspect and fix "
        "the task table.",
        epilog=_EPILOG,
    )
    _global_options(parser, suppress=False)
    shared = argparse.ArgumentParser(add_help=False)
    _global_options(shared, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_command.add_parser(commands, shared)
    worker_command.add_parser(commands, shared)
    tasks_command.add_parser(commands, shared)
    stats_command.add_parser(commands, shared)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0) if isinstance(exc.code, int) else common.EXIT_USAGE
    level = logs.parse_level(str(args.log_level))
    if level is None:
        print(f"taskengine: unknown log level {args.log_level!r}", file=sys.stderr)
        return common.EXIT_USAGE
    logs.configure(level)
    try:
        code: int = args.run(args)
    except common.CliError as exc:
        _report(exc, args.debug)
        return exc.code
    except errors.TaskValidationError as exc:
        _report(exc, args.debug)
        return common.EXIT_USAGE
    except errors.TaskEngineError as exc:
        _report(exc, args.debug)
        return common.EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (``taskengine tasks list --json | head``): stop quietly, and
        # point stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return common.EXIT_FAILURE
    except KeyboardInterrupt:
        print("taskengine: interrupted", file=sys.stderr)
        return common.EXIT_FAILURE
    except Exception as exc:
        _report(exc, args.debug, prefix=f"unexpected {type(exc).__name__}: ")
        return common.EXIT_FAILURE
    return code


def _report(exc: BaseException, debug: bool, prefix: str = "") -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"taskengine: {prefix}{message}", file=sys.stderr)
