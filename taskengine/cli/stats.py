"""``taskengine stats``: counts per type and status, oldest due wait, attempts, workers.

The counts describe the whole task table (read from the store).  Worker figures belong to the
process that runs the pools: this command starts none, so it shows those that running
``taskengine worker`` nodes publish: on SQLite the node's node file (``nodefile.py``), on
PostgreSQL the rows of every live node in the schema's node table (``nodetable.py``), added up.
"""

from __future__ import annotations

import argparse
from typing import Any

import attrs

import taskengine
from taskengine.cli import common, nodefile, nodetable
from taskengine.coordinator import stats as engine_stats
from taskengine.core import models

__all__ = ["add_parser", "render", "with_node"]


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add the ``stats`` command."""
    parser = commands.add_parser(
        "stats",
        parents=[shared],
        help="task counts per type and status, oldest due wait, attempts",
        description="Print the counts of visible tasks per type and status, how long the "
        "oldest due pending task has waited, and the attempts made.",
    )
    common.add_store_option(parser)
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.set_defaults(run=run)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(snapshot: engine_stats.EngineStats) -> None:
    """Print ``snapshot`` as a table."""
    table = common.table(title=f"taskengine stats ({snapshot.date_taken:%Y-%m-%d %H:%M:%S} UTC)")
    table.add_column("type")
    for status in models.TaskStatus:
        table.add_column(status.value, justify="right")
    table.add_column("attempts", justify="right")
    table.add_column("oldest due", justify="right")
    if snapshot.is_dispatching:
        for name in ("workers", "busy", "done", "failures", "crashes", "mean run"):
            table.add_column(name, justify="right")
    for entry in (*snapshot.types, _totals(snapshot)):
        row = [entry.task_type, *(str(entry.count(s)) for s in models.TaskStatus)]
        row += [str(entry.attempts), _seconds(entry.oldest_pending_age)]
        if snapshot.is_dispatching:
            row += [
                f"{entry.workers_alive}/{entry.max_worker_count}",
                str(entry.workers_busy),
                str(entry.tasks_done),
                str(entry.failures),
                str(entry.crashes),
                _seconds(entry.mean_run_time),
            ]
        table.add_row(*row, style="bold" if entry.task_type == "(all)" else None)
    common.console().print(table)


def _totals(snapshot: engine_stats.EngineStats) -> engine_stats.TypeStats:
    def total(name: str) -> int:
        return sum(int(getattr(entry, name)) for entry in snapshot.types)

    return engine_stats.TypeStats(
        task_type="(all)",
        pending=total("pending"),
        processing=total("processing"),
        success=total("success"),
        failed=total("failed"),
        cancelled=total("cancelled"),
        attempts=snapshot.attempts,
        oldest_pending_age=snapshot.oldest_pending_age,
        workers_alive=total("workers_alive"),
        workers_busy=total("workers_busy"),
        max_worker_count=total("max_worker_count"),
        tasks_done=total("tasks_done"),
        failures=total("failures"),
        crashes=total("crashes"),
    )


#: Pool figures of a node's snapshot (JSON key -> ``TypeStats`` field).
_POOL_FIELDS = {
    "isRegistered": "is_registered",
    "workersAlive": "workers_alive",
    "workersBusy": "workers_busy",
    "maxWorkerCount": "max_worker_count",
    "tasksDone": "tasks_done",
    "failures": "failures",
    "crashes": "crashes",
    "meanRunTime": "mean_run_time",
}


def with_node(snapshot: engine_stats.EngineStats, node: dict[str, Any]) -> engine_stats.EngineStats:
    """``snapshot`` (the store's counts) with the pool figures of a running node's snapshot."""
    pools = {entry["type"]: entry for entry in node.get("types", []) if entry.get("isRegistered")}
    names = sorted({entry.task_type for entry in snapshot.types} | set(pools))
    types = []
    for name in names:
        entry = snapshot.of(name)
        if name in pools:
            entry = attrs.evolve(
                entry, **{field: pools[name][key] for key, field in _POOL_FIELDS.items()}
            )
        types.append(entry)
    return attrs.evolve(
        snapshot,
        node_identity=str(node.get("nodeIdentity", snapshot.node_identity)),
        is_dispatching=True,
        types=tuple(types),
    )


def run(args: argparse.Namespace) -> int:
    """Print the snapshot, with a running node's pool figures where it publishes them."""
    engine = common.offline_engine(common.store_url(args.store))
    try:
        snapshot = engine.stats()
        store = engine.store
    finally:
        engine.stop()
    node = None
    dsn, schema = getattr(store, "dsn", None), getattr(store, "schema", None)
    if isinstance(store, taskengine.SqliteStore):
        node = nodefile.read_live(nodefile.path_for(store.path))
    elif store.capabilities.shared and isinstance(dsn, str) and isinstance(schema, str):
        try:
            node = nodetable.merge(nodetable.NodeTable(dsn, schema).read_live())
        except taskengine.TaskEngineError as exc:
            raise common.CliError(f"cannot read the node table: {exc}") from exc
    if node is not None:
        snapshot = with_node(snapshot, node)
    if args.json:
        data = snapshot.to_json()
        data["workersFrom"] = None if node is None else node.get("dateTaken")
        common.print_json(data)
    else:
        render(snapshot)
        if node is not None:
            common.console().print(
                f"workers: node {snapshot.node_identity}, as of {node.get('dateTaken')}"
            )
        else:
            common.console().print("workers: no running node publishes figures for this store")
    return common.EXIT_OK
