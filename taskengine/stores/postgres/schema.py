"""The PostgreSQL schema of the task table, the SQL ``PostgresStore`` runs, and row conversion.

Every statement is a constant naming unqualified tables: each connection of the store sets its
``search_path`` to the store's schema (composed with ``psycopg.sql.Identifier``), so no schema
name is ever pasted into SQL text.  Every value is a bound ``%s`` parameter; the only SQL
assembled at run time are query pages and fenced updates, built from the column whitelist and
the fixed sort and direction mappings below.

Layout: dates are BIGINT milliseconds since the Unix epoch (UTC), exactly as in SQLite, so sort
keys and cursors are identical across stores.  Three columns of a processing task are not in the
model: ``lease_until``, the database time (``now()``) until which the claiming node's lease
holds; ``claim_token``, the incarnation (one ``PostgresStore`` object, so one run of a node) that
holds the claim, so that a node restarted under the same identity never renews the leases of the
attempts that died with its previous run; and ``claimed_due``, the ``date_next_process`` the
task had when it was claimed, so that an attempt taken over from a dead node keeps its place in
the queue.  The schema version is the single row of ``schema_version``; ``MIGRATIONS`` bring an
older schema up to ``SCHEMA_VERSION``.

Text columns that are sorted or compared (id, type, status) use the "C" collation, so their
order is the byte order every other store uses, whatever the database's locale.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final, LiteralString

from taskengine.core import cursor, models
from taskengine.stores import base, rows

__all__ = [
    "COLUMNS",
    "DDL",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "changed_update",
    "from_row",
    "insert_notify_sql",
    "query_sql",
    "to_row",
    "upgrade",
    "write_statement",
]

#: The schema version this code writes and understands.
SCHEMA_VERSION: Final = 2

#: Column order of every SELECT and INSERT of a task: the same as SQLite's, so that row
#: conversion and changed-column updates read alike in both stores.
COLUMNS: Final[tuple[LiteralString, ...]] = rows.COLUMNS

_SELECT_LIST: Final[LiteralString] = ", ".join(COLUMNS)
_PLACEHOLDERS: Final[LiteralString] = ", ".join("%s" for _ in COLUMNS)
_STATUSES: Final[LiteralString] = "'pending', 'processing', 'success', 'failed', 'cancelled'"
#: The lease expression: database time plus a number of seconds (a bound parameter).
LEASE: Final[LiteralString] = "now() + %s * interval '1 second'"
#: Assignments of an update into processing (a claim).  Parameters: lease seconds, claim token.
#: ``claimed_due`` reads the row as it was before the update (PostgreSQL evaluates every
#: assignment against the old row), which is its due time before the claim cleared it.
CLAIM_ASSIGNMENTS: Final[tuple[LiteralString, ...]] = (
    f"lease_until = {LEASE}",
    "claim_token = %s",
    "claimed_due = date_next_process",
)
#: Assignments of an update out of processing: the claim is over.
UNCLAIM_ASSIGNMENTS: Final[tuple[LiteralString, ...]] = (
    "lease_until = NULL",
    "claim_token = NULL",
    "claimed_due = NULL",
)

#: Statements that create the current schema version (in one transaction, under an advisory
#: lock).
DDL: Final[tuple[LiteralString, ...]] = (
    "CREATE TABLE schema_version (version integer NOT NULL)",
    f"""
    CREATE TABLE tasks (
        id text COLLATE "C" NOT NULL PRIMARY KEY,
        type text COLLATE "C" NOT NULL,
        status text COLLATE "C" NOT NULL CHECK (status IN ({_STATUSES})),
        payload bytea NOT NULL,
        result bytea,
        error text,
        date_created bigint NOT NULL,
        date_modified bigint NOT NULL,
        date_completed bigint,
        date_cancelled bigint,
        date_next_process bigint,
        date_retain_until bigint,
        retries_remaining bigint,
        retry_interval double precision NOT NULL,
        retain_for double precision,
        attempts integer NOT NULL CHECK (attempts >= 0),
        node_identity text,
        progress double precision,
        idempotency_key text,
        lease_until timestamptz,
        claim_token text,
        claimed_due bigint
    )
    """,
    "CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX tasks_due ON tasks (type, date_next_process, id) WHERE status = 'pending'",
    "CREATE INDEX tasks_lease ON tasks (lease_until) WHERE status = 'processing'",
    "CREATE INDEX tasks_node ON tasks (node_identity) WHERE status = 'processing'",
    "CREATE INDEX tasks_retain_until ON tasks (date_retain_until, id)"
    " WHERE date_retain_until IS NOT NULL",
    "CREATE INDEX tasks_type_status_created ON tasks (type, status, date_created, id)",
    "CREATE INDEX tasks_status_created ON tasks (status, date_created, id)",
)
#: Record the schema version (after ``DDL``).
INSERT_VERSION: Final = "INSERT INTO schema_version (version) VALUES (%s)"
#: Statements that bring a schema of version ``n - 1`` to version ``n``, per ``n``.
MIGRATIONS: Final[dict[int, tuple[LiteralString, ...]]] = {
    2: (
        "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS claim_token text",
        "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS claimed_due bigint",
    ),
}
assert sorted(MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))
UPDATE_VERSION: Final = "UPDATE schema_version SET version = %s"

#: Tables of this code in a schema (to tell an empty schema from a foreign or broken one).
LIST_TABLES: Final = (
    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = %s"
)
#: The recorded schema version.
SELECT_VERSION: Final = "SELECT max(version) FROM schema_version"
#: Serialises schema creation between nodes starting at once (transaction-scoped lock).
LOCK_SCHEMA: Final = "SELECT pg_advisory_xact_lock(hashtext(%s))"

#: Insert one task; the last parameters are the lease in seconds and the claim token (both None
#: for a task not processing).
INSERT: Final = (
    f"INSERT INTO tasks ({_SELECT_LIST}, lease_until, claim_token)"  # noqa: S608 -- constants only
    f" VALUES ({_PLACEHOLDERS}, {LEASE}, %s)"
)
#: Insert one task unless its idempotency key is taken; returns the id when inserted.
INSERT_KEYED: Final = (
    INSERT + " ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    " RETURNING id"
)
#: Most tasks one ``insert_notify_sql`` statement carries (PostgreSQL binds at most 65,535
#: parameters; a task takes 21).
INSERT_ROWS: Final = 1000


@functools.lru_cache(maxsize=64)
def insert_notify_sql(rows: int, *, idempotent: bool = False) -> LiteralString:
    """One statement that inserts ``rows`` tasks and sends the wake-up ``NOTIFY``.

    Run in autocommit it is a whole create in one round trip and one commit: the insert and
    the notification are one implicit transaction, so the notification goes out only if the
    tasks were stored.  Parameters: each task's ``INSERT`` parameters, then the channel and
    the payload of the notification.  ``idempotent`` skips ids already stored, for the one
    retry after a connection that broke during the statement (whose insert may have landed;
    task ids are random, so an id already stored is this insert's own).
    """
    values = ", ".join([f"({_PLACEHOLDERS}, {LEASE}, %s)"] * rows)
    conflict = " ON CONFLICT (id) DO NOTHING" if idempotent else ""
    return (  # built from constants only
        f"WITH inserted AS (INSERT INTO tasks ({_SELECT_LIST}, lease_until, claim_token)"  # noqa: S608
        f" VALUES {values}{conflict} RETURNING 1)"
        " SELECT pg_notify(%s, %s) WHERE EXISTS (SELECT 1 FROM inserted)"
    )


SELECT_BY_ID: Final = f"SELECT {_SELECT_LIST} FROM tasks WHERE id = %s"  # noqa: S608 -- constants only
ID_BY_KEY: Final = "SELECT id FROM tasks WHERE idempotency_key = %s"
#: Lock due pending tasks of a type, oldest due first, skipping rows another node holds.
SELECT_DUE: Final = (
    f"SELECT {_SELECT_LIST} FROM tasks"  # noqa: S608 -- constants only
    " WHERE status = 'pending' AND type = %s AND date_next_process <= %s"
    " ORDER BY date_next_process, id LIMIT %s FOR UPDATE SKIP LOCKED"
)
#: ``transitions.claim`` in SQL, with the lease, on the due tasks ``SELECT_DUE`` would lock,
#: returning their new rows, each followed by its due time before the claim (RETURNING gives
#: no promised order: the caller sorts by it, then id).  It must change exactly what
#: ``transitions.claim`` does (``tests/postgres/test_postgres_store.py`` compares them).
#: Parameters: those of ``SELECT_DUE``, then node, now (ms), lease seconds, claim token.
CLAIM_DUE: Final = (
    # MATERIALIZED: the locking read runs once, so LIMIT bounds the claim (a subquery in
    # ``WHERE id IN (...)`` may be planned as a join that re-runs it and claims more).
    "WITH due AS MATERIALIZED (SELECT id FROM tasks"  # noqa: S608 -- constants only
    " WHERE status = 'pending' AND type = %s AND date_next_process <= %s"
    " ORDER BY date_next_process, id LIMIT %s FOR UPDATE SKIP LOCKED)"
    " UPDATE tasks SET status = 'processing', attempts = attempts + 1, node_identity = %s,"
    " date_next_process = NULL, date_modified = %s, progress = NULL,"
    f" lease_until = {LEASE}, claim_token = %s, claimed_due = date_next_process"
    " FROM due WHERE tasks.id = due.id"
    f" RETURNING {', '.join(f'tasks.{c}' for c in COLUMNS)}, claimed_due"
)
#: Makes the commit of the current transaction asynchronous: a transaction of claims alone
#: (see ``PostgresStore.apply_and_claim``).
ASYNC_COMMIT: Final = "SET LOCAL synchronous_commit = off"
#: ``CLAIM_DUE`` as a whole transaction of its own (autocommit), committed asynchronously:
#: ``set_config(..., true)`` sets ``synchronous_commit`` for the statement's own implicit
#: transaction, which its commit then follows.  One round trip for a claim alone.
CLAIM_DUE_ALONE: Final = CLAIM_DUE.replace(
    " FROM due WHERE tasks.id = due.id",
    " FROM due, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
    " WHERE tasks.id = due.id",
    1,
)
NEXT_DUE: Final = (
    "SELECT min(date_next_process) FROM tasks"
    " WHERE status = 'pending' AND type = ANY(%s) AND date_next_process IS NOT NULL"
)
#: A fenced update that changes nothing (its row count still says whether the fence held).
UPDATE_FENCED_NOTHING: Final = (
    "UPDATE tasks SET id = id WHERE id = %s AND status = %s AND attempts = %s"
)
DELETE: Final[dict[tuple[bool, bool], LiteralString]] = {
    (False, False): "DELETE FROM tasks WHERE id = %s",
    (True, False): "DELETE FROM tasks WHERE id = %s AND status = %s",
    (False, True): "DELETE FROM tasks WHERE id = %s AND attempts = %s",
    (True, True): "DELETE FROM tasks WHERE id = %s AND status = %s AND attempts = %s",
}
PURGE: Final = (
    "DELETE FROM tasks WHERE id IN ("
    " SELECT id FROM tasks WHERE date_retain_until IS NOT NULL AND date_retain_until <= %s"
    " ORDER BY date_retain_until, id LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING id, date_retain_until"
)
NEXT_EXPIRY: Final = "SELECT min(date_retain_until) FROM tasks"
SELECT_PROCESSING: Final = f"SELECT {_SELECT_LIST} FROM tasks WHERE status = 'processing'"  # noqa: S608 -- constants only
#: Extend the lease of every processing task one incarnation of a node holds.  Parameters:
#: seconds, node, claim token.
RENEW_LEASES: Final = (
    f"UPDATE tasks SET lease_until = {LEASE}"  # noqa: S608 -- constants only
    " WHERE status = 'processing' AND node_identity = %s AND claim_token = %s RETURNING id"
)
#: ``RENEW_LEASES`` restricted to the attempts the node runs.  Parameters: seconds, node, claim
#: token, task ids.
RENEW_HELD_LEASES: Final = (
    f"UPDATE tasks SET lease_until = {LEASE}"  # noqa: S608 -- constants only
    " WHERE status = 'processing' AND node_identity = %s AND claim_token = %s"
    " AND id = ANY(%s) RETURNING id"
)
#: End at once the leases a node's earlier incarnations left (their attempts died with them).
#: Parameters: node, this incarnation's claim token.  Returns the ids.
EXPIRE_EARLIER_CLAIMS: Final = (
    "UPDATE tasks SET lease_until = NULL WHERE status = 'processing' AND node_identity = %s"
    " AND claim_token IS DISTINCT FROM %s RETURNING id"
)
#: Processing tasks whose lease ended in database time, oldest lease first, each with the due
#: time it had when it was claimed (the last column).
SELECT_EXPIRED: Final = (
    f"SELECT {_SELECT_LIST}, claimed_due FROM tasks"  # noqa: S608 -- constants only
    " WHERE status = 'processing' AND (lease_until IS NULL OR lease_until < now())"
    " ORDER BY lease_until NULLS FIRST, id LIMIT %s"
)
NOTIFY: Final = "SELECT pg_notify(%s, %s)"
#: Visible tasks per (type, status).  Parameter: now (ms).
COUNT_TASKS: Final = (
    "SELECT type, status, count(*), sum(attempts), min(date_created), min(date_next_process)"
    " FROM tasks WHERE date_retain_until IS NULL OR date_retain_until > %s GROUP BY type, status"
)

#: Sort field -> SQL expression (the whitelist; anything else is a ``KeyError``).
SORT_EXPRESSIONS: Final[dict[str, LiteralString]] = {
    "date_created": "date_created",
    "date_modified": "date_modified",
    "date_completed": "COALESCE(date_completed, -1)",
    "status": "status",
}
_DIRECTIONS: Final[dict[models.SortDirection, tuple[LiteralString, LiteralString]]] = {
    models.SortDirection.ASCENDING: ("ASC", ">"),
    models.SortDirection.DESCENDING: ("DESC", "<"),
}
assert cursor.NO_DATE == -1  # the COALESCE above spells it out


def query_sql(spec: cursor.QuerySpec, *, keyset: bool) -> LiteralString:
    """The SQL of one query page for ``spec``.

    Named parameters: ``type`` and ``status`` (when filtered), ``now`` (ms, for retention),
    ``value`` and ``after_id`` (when ``keyset``), ``limit``.

    Args:
        spec: the validated query.
        keyset: whether the page starts after a cursor position.

    Returns:
        The statement text.
    """
    expression = SORT_EXPRESSIONS[spec.sort_field]
    direction, comparison = _DIRECTIONS[spec.direction]
    where: list[LiteralString] = ["(date_retain_until IS NULL OR date_retain_until > %(now)s)"]
    if spec.task_type is not None:
        where.append("type = %(type)s")
    if spec.status is not None:
        where.append("status = %(status)s")
    if keyset:
        where.append(f"({expression}, id) {comparison} (%(value)s, %(after_id)s)")
    return (
        f"SELECT {_SELECT_LIST} FROM tasks WHERE {' AND '.join(where)}"  # noqa: S608 -- constants only
        f" ORDER BY {expression} {direction}, id {direction} LIMIT %(limit)s"
    )


def changed_update(
    old: tuple[object, ...], new: tuple[object, ...], extra: Sequence[LiteralString] = ()
) -> tuple[LiteralString, tuple[object, ...]]:
    """A fenced UPDATE of the columns that differ between two rows of one task.

    ``extra`` are further assignments of columns outside the model (``CLAIM_ASSIGNMENTS``,
    ``UNCLAIM_ASSIGNMENTS``).  Parameters after the returned values: those of ``extra``, then
    id, expected status, expected attempts (the caller adds them).  Column names come from
    ``COLUMNS`` only.
    """
    changed = [i for i in range(1, len(COLUMNS)) if old[i] != new[i]]
    assignments: list[LiteralString] = [f"{COLUMNS[i]} = %s" for i in changed]
    assignments.extend(extra)
    if not assignments:
        return UPDATE_FENCED_NOTHING, ()
    return (
        f"UPDATE tasks SET {', '.join(assignments)}"  # noqa: S608 -- constants only
        " WHERE id = %s AND status = %s AND attempts = %s",
        tuple(new[i] for i in changed),
    )


def write_statement(
    write: base.Write, lease_seconds: float, claim_token: str
) -> tuple[LiteralString, tuple[object, ...]]:
    """The SQL and parameters of one fenced write.

    An update into ``processing`` starts a lease of ``lease_seconds`` held by ``claim_token``;
    one out of it ends the claim; one that stays ``processing`` (progress) leaves it alone.
    """
    if isinstance(write, base.Delete):
        fenced = (write.expected_status is not None, write.expected_attempts is not None)
        params: tuple[object, ...] = (write.task_id,)
        if write.expected_status is not None:
            params += (write.expected_status.value,)
        if write.expected_attempts is not None:
            params += (write.expected_attempts,)
        return DELETE[fenced], params
    fence = (write.task.id, write.expected_status.value, write.expected_attempts)
    new_row = to_row(write.task)
    if write.previous is not None and write.previous.id == write.task.id:
        old_row = to_row(write.previous)
    else:  # unknown previous record: every column is written
        old_row = (write.task.id,) + (object(),) * (len(new_row) - 1)
    processing = models.TaskStatus.PROCESSING
    extra: Sequence[LiteralString] = ()
    extra_params: tuple[object, ...] = ()
    if write.task.status is processing and write.expected_status is not processing:
        extra, extra_params = CLAIM_ASSIGNMENTS, (lease_seconds, claim_token)
    elif write.expected_status is processing and write.task.status is not processing:
        extra = UNCLAIM_ASSIGNMENTS
    query, values = changed_update(old_row, new_row, extra)
    return query, (*values, *extra_params, *fence)


def upgrade(conn: Any) -> None:
    """Bring the schema on ``conn``'s ``search_path`` to ``SCHEMA_VERSION``.

    Run in the transaction (and under the advisory lock) that created or checked the schema,
    so nodes starting at once migrate it once.  ``conn`` is a ``psycopg.Connection``.
    """
    row = conn.execute(SELECT_VERSION).fetchone()
    version = SCHEMA_VERSION if row is None or row[0] is None else int(row[0])
    if version >= SCHEMA_VERSION:
        return
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[target]:
            conn.execute(statement)
    conn.execute(UPDATE_VERSION, (SCHEMA_VERSION,))


def to_row(task: models.BackgroundTask) -> tuple[object, ...]:
    """The column values of ``task`` in ``COLUMNS`` order (the same values as in SQLite)."""
    return rows.to_row(task)


def from_row(row: tuple[Any, ...]) -> models.BackgroundTask:
    """The task of a row selected with ``COLUMNS``.

    Raises:
        ValueError: a column holds a value that is not a valid task field.
    """
    # The columns hold the same values as SQLite's, but a bytea may arrive as a memoryview.
    payload, result = row[3], row[4]
    blobs = (bytes(payload), None if result is None else bytes(result))
    return rows.from_row((*row[:3], *blobs, *row[5:]))
