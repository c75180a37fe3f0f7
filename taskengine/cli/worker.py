"""``taskengine worker APP``: run an engine node until SIGTERM or SIGINT.

``APP`` is ``package.module:function``; the function receives the (not yet started) engine and
registers its handlers.  The node is the only command that calls ``engine.start()``, so it is
the only one that takes the store's dispatch lock.

Signals.  The first SIGTERM or SIGINT stops gracefully: no new attempts start, running ones may
finish for up to ``--stop-timeout`` seconds (then they are killed and count as crashed), every
worker runs its shutdown method, and the command exits 0.  A second signal stops at once: every
worker process is killed and the command exits 1; the attempts it cut short are still
``processing`` in the store and are re-queued (counted as crashed) when a node starts on the
store again.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import psutil

import taskengine
from taskengine.cli import common, nodefile, nodetable

__all__ = ["add_parser", "load_app"]

log = logging.getLogger(__name__)


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add the ``worker`` command."""
    parser = commands.add_parser(
        "worker",
        parents=[shared],
        help="run an engine node (handlers registered by APP) until SIGTERM/SIGINT",
        description="Run an engine node: import APP (package.module:function), call it with "
        "the engine so that it registers handlers, start dispatching, and run until SIGTERM or "
        "SIGINT.  The first signal stops gracefully (running attempts may finish for up to "
        "--stop-timeout seconds, shutdown methods run; exit 0); a second one kills every "
        "worker at once (exit 1).",
    )
    parser.add_argument(
        "app", metavar="APP", help="package.module:function that registers handlers"
    )
    common.add_store_option(parser)
    parser.add_argument(
        "--node-identity", metavar="NAME", help="this node's name (default host:pid:random)"
    )
    parser.add_argument(
        "--max-total-workers",
        type=int,
        metavar="N",
        help="cap on all pools' workers (default: CPU count)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long running attempts may finish after the first signal (default 30)",
    )
    parser.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="directory put first on sys.path to import APP from (default: the current one)",
    )
    parser.add_argument(
        "--stats-interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="log a stats line per task type every SECONDS at level INFO (0: never)",
    )
    parser.set_defaults(run=run)


def load_app(spec: str, app_dir: str) -> Callable[[taskengine.TaskEngine], object]:
    """Import ``package.module:function`` and return the function.

    Raises:
        CliError: the text is malformed (exit 2), or the module or function cannot be loaded.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute.isidentifier():
        raise common.CliError(
            f"APP must look like package.module:function, not {spec!r}", common.EXIT_USAGE
        )
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise common.CliError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise common.CliError(f"{module_name!r} has no function {attribute!r}")
    return function  # type: ignore[no-any-return]


class _Signals:
    """First signal: ask for a graceful stop.  Second: kill every worker and exit now."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.name = ""
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if not self.stop.is_set():
            self.name = signal.Signals(number).name
            self.stop.set()
            return
        _kill_descendants()
        os.write(
            2,
            b"taskengine worker: second signal: killed every worker; interrupted attempts "
            b"are re-queued when a node starts on this store again\n",
        )
        os._exit(common.EXIT_FAILURE)


def _kill_descendants() -> None:
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            continue


def _log_stats(engine: taskengine.TaskEngine) -> None:
    try:
        snapshot = engine.stats()
    except taskengine.TaskEngineError:
        log.warning("could not take stats", exc_info=True)
        return
    for entry in snapshot.types:
        log.info(
            "stats: pending=%d processing=%d success=%d failed=%d cancelled=%d workers=%d/%d "
            "busy=%d done=%d failures=%d crashes=%d",
            entry.pending,
            entry.processing,
            entry.success,
            entry.failed,
            entry.cancelled,
            entry.workers_alive,
            entry.max_worker_count,
            entry.workers_busy,
            entry.tasks_done,
            entry.failures,
            entry.crashes,
            extra={"task_type": entry.task_type, "node": snapshot.node_identity},
        )


class _NodeFigures:
    """Where this node publishes its pools' figures for ``taskengine stats`` in other processes.

    SQLite: the node file beside the database (``nodefile.py``).  PostgreSQL: this node's row of
    the schema's node table (``nodetable.py``).  Other stores: nowhere.  After a failure it logs
    once and publishes nothing more (the node keeps running).
    """

    def __init__(self, engine: taskengine.TaskEngine) -> None:
        self._engine = engine
        store = engine.store
        self._path: str | None = None
        self._table: nodetable.NodeTable | None = None
        dsn, schema = getattr(store, "dsn", None), getattr(store, "schema", None)
        if isinstance(store, taskengine.SqliteStore):
            self._path = nodefile.path_for(store.path)
        elif store.capabilities.shared and isinstance(dsn, str) and isinstance(schema, str):
            self._table = nodetable.NodeTable(dsn, schema)
        self.written = time.monotonic()

    @property
    def active(self) -> bool:
        """Whether figures are (still) published."""
        return self._path is not None or self._table is not None

    def publish(self) -> None:
        """Write the current snapshot."""
        self.written = time.monotonic()
        try:
            if self._path is not None:
                nodefile.write(self._path, self._engine.stats())
            elif self._table is not None:
                self._table.write(self._engine.stats())
        except (OSError, taskengine.TaskEngineError):
            log.warning(
                "cannot publish this node's pool figures; taskengine stats will show none",
                exc_info=True,
                extra={"node": self._engine.node_identity},
            )
            self._path = self._table = None

    def withdraw(self) -> None:
        """Remove what this node published (a stopped node publishes nothing)."""
        if self._path is not None:
            nodefile.remove(self._path)
        elif self._table is not None:
            try:
                self._table.remove(self._engine.node_identity)
            except taskengine.TaskEngineError:
                log.warning(
                    "cannot remove this node's row of the node table; it expires by itself",
                    exc_info=True,
                    extra={"node": self._engine.node_identity},
                )


def _wait_for_signal(
    signals: _Signals, engine: taskengine.TaskEngine, interval: float, figures: _NodeFigures
) -> None:
    # A bounded wait: the signal handler runs between the waits' wake-ups at the latest.
    next_stats = time.monotonic() + interval
    while not signals.stop.wait(min(1.0, interval) if interval else 1.0):
        if interval and time.monotonic() >= next_stats:
            _log_stats(engine)
            next_stats = time.monotonic() + interval
        if figures.active and nodefile.due(figures.written):
            figures.publish()


def run(args: argparse.Namespace) -> int:
    """Run the node until a signal."""
    if not args.stop_timeout >= 0:
        raise common.CliError("--stop-timeout must be seconds >= 0", common.EXIT_USAGE)
    if not args.stats_interval >= 0:
        raise common.CliError("--stats-interval must be seconds >= 0", common.EXIT_USAGE)
    setup = load_app(args.app, args.app_dir)
    url = common.store_url(args.store)
    signals = _Signals()
    figures: _NodeFigures | None = None
    signals.install()
    try:
        engine = common.engine_on(
            url, node_identity=args.node_identity, max_total_workers=args.max_total_workers
        )
        try:
            try:
                setup(engine)
            except taskengine.TaskEngineError:
                raise
            except Exception as exc:
                raise common.CliError(f"{args.app} failed: {type(exc).__name__}: {exc}") from exc
            engine.start()
            types = [e.task_type for e in engine.stats().types if e.is_registered]
            print(
                f"taskengine worker: node {engine.node_identity} dispatching "
                f"{', '.join(types) or 'no task type'} from {common.describe(url)}; "
                "stop with SIGTERM or Ctrl-C",
                file=sys.stderr,
                flush=True,
            )
            figures = _NodeFigures(engine)
            figures.publish()
            _wait_for_signal(signals, engine, args.stats_interval, figures)
            print(
                f"taskengine worker: {signals.name}: stopping; running attempts may finish for "
                f"up to {args.stop_timeout:g} s (a second signal stops at once)",
                file=sys.stderr,
                flush=True,
            )
        finally:
            engine.stop(args.stop_timeout)
            if figures is not None:
                figures.withdraw()
    finally:
        signals.restore()
    print("taskengine worker: stopped", file=sys.stderr, flush=True)
    return common.EXIT_OK
