"""The node table: how ``taskengine stats`` sees the pools of every node of a PostgreSQL cluster.

The PostgreSQL counterpart of the node file (``nodefile.py``).  Each ``taskengine worker`` on a
PostgreSQL store upserts its ``engine.stats()`` snapshot (the JSON form, no payload) into the
``cli_nodes`` table of the store's schema every ``nodefile.INTERVAL`` seconds, stamped with the
database's time, and deletes its row when it stops.  ``taskengine stats`` reads the rows written
in the last ``nodefile.MAX_AGE`` seconds (database time again, so clock skew between machines
does not matter): a node that died without deleting its row drops out by itself.

Identifiers (the schema name) are composed with ``psycopg.sql.Identifier``; every value is a
bound parameter.  psycopg is imported only when a PostgreSQL store is used.
"""

from __future__ import annotations

import json
from typing import Any, Final, LiteralString

from taskengine.cli import nodefile
from taskengine.coordinator import stats as engine_stats
from taskengine.core import errors

__all__ = ["NodeTable"]

_CREATE: Final[tuple[LiteralString, ...]] = (
    "CREATE SCHEMA IF NOT EXISTS {schema}",
    "CREATE TABLE IF NOT EXISTS {schema}.cli_nodes ("
    " node_identity text PRIMARY KEY,"
    " taken timestamptz NOT NULL,"
    " stats jsonb NOT NULL)",
)
_UPSERT: Final[LiteralString] = (
    "INSERT INTO {schema}.cli_nodes (node_identity, taken, stats) VALUES (%s, now(), %s)"
    " ON CONFLICT (node_identity) DO UPDATE SET taken = now(), stats = EXCLUDED.stats"
)
_DELETE: Final[LiteralString] = "DELETE FROM {schema}.cli_nodes WHERE node_identity = %s"
_LIVE: Final[LiteralString] = (
    "SELECT stats FROM {schema}.cli_nodes"
    " WHERE taken > now() - %s * interval '1 second' ORDER BY node_identity"
)
#: Seconds to wait for a connection.
_CONNECT_TIMEOUT: Final = 5


class NodeTable:
    """The ``cli_nodes`` table of one PostgreSQL schema."""

    def __init__(self, dsn: str, schema: str) -> None:
        import psycopg
        from psycopg import sql

        self._psycopg = psycopg
        self._sql = sql
        self._dsn = dsn
        self._schema = schema

    def _statement(self, text: LiteralString) -> Any:
        return self._sql.SQL(text).format(schema=self._sql.Identifier(self._schema))

    def _run(self, text: LiteralString, params: tuple[object, ...] = ()) -> list[Any]:
        try:
            with self._psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
            ) as conn:
                cursor = conn.execute(self._statement(text), params)
                return list(cursor.fetchall()) if cursor.description else []
        except self._psycopg.Error as exc:
            raise errors.StoreError(
                f"the node table of schema {self._schema!r}: {type(exc).__name__}"
            ) from exc

    def write(self, snapshot: engine_stats.EngineStats) -> None:
        """Store this node's snapshot (creating the table on first use)."""
        try:
            with (
                self._psycopg.connect(self._dsn, connect_timeout=_CONNECT_TIMEOUT) as conn,
                conn.transaction(),
            ):
                # Nodes starting together would collide in CREATE ... IF NOT EXISTS.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    ("taskengine-cli-nodes:" + self._schema,),
                )
                for text in _CREATE:
                    conn.execute(self._statement(text))
                conn.execute(
                    self._statement(_UPSERT),
                    (snapshot.node_identity, json.dumps(snapshot.to_json())),
                )
        except self._psycopg.Error as exc:
            raise errors.StoreError(
                f"the node table of schema {self._schema!r}: {type(exc).__name__}"
            ) from exc

    def remove(self, node_identity: str) -> None:
        """Delete a node's row (a stopped node publishes nothing)."""
        self._run(_DELETE, (node_identity,))

    def read_live(self) -> list[dict[str, Any]]:
        """The snapshots that nodes wrote recently; none when no node ever wrote one."""
        try:
            rows = self._run(_LIVE, (nodefile.MAX_AGE,))
        except errors.StoreError as exc:
            if isinstance(exc.__cause__, self._psycopg.errors.UndefinedTable):
                return []
            raise
        return [row[0] for row in rows]


def merge(nodes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One snapshot with the pool figures of several nodes added up per task type.

    Counts, workers and attempts add up; the mean run time is weighted by each node's attempts
    done; ``nodeIdentity`` lists the nodes and ``dateTaken`` is the oldest snapshot's.
    """
    if not nodes:
        return None
    summed = ("workersAlive", "workersBusy", "maxWorkerCount", "tasksDone", "failures", "crashes")
    types: dict[str, dict[str, Any]] = {}
    weights: dict[str, float] = {}
    for node in nodes:
        for entry in node.get("types", []):
            if not entry.get("isRegistered"):
                continue
            merged = types.setdefault(
                entry["type"], {"type": entry["type"], "isRegistered": True, "meanRunTime": None}
            )
            for key in summed:
                merged[key] = merged.get(key, 0) + int(entry.get(key) or 0)
            mean, done = entry.get("meanRunTime"), int(entry.get("tasksDone") or 0)
            if mean is not None and done:
                weights[entry["type"]] = weights.get(entry["type"], 0.0) + mean * done
    for name, merged in types.items():
        if merged["tasksDone"] and name in weights:
            merged["meanRunTime"] = weights[name] / merged["tasksDone"]
    return {
        "nodeIdentity": ", ".join(str(node.get("nodeIdentity")) for node in nodes),
        "dateTaken": min(str(node.get("dateTaken")) for node in nodes),
        "types": sorted(types.values(), key=lambda entry: entry["type"]),
    }
