"""The SQLite schema of the task table, every SQL statement ``SqliteStore`` runs, and rows.

All SQL text lives here as constants, so it can be read (and its query plans checked by the
tests) in one place.  The only statements assembled at run time are the query pages, and they
are assembled from the fixed pieces below, chosen by a whitelisted sort field and direction;
every value from the caller is a bound parameter.

Size: it holds all the SQL of the backend (the DDL and its upgrade steps, the task, blob and
schedule statements, and the query-page builders) and little else, on purpose: one file answers
what the store can run against the database, so a reviewer checks every statement for bound
parameters and for the index it relies on in one place, and each upgrade step (``UPGRADES``)
reuses the very DDL constants a new file is created with.  The code that runs the statements
is in ``store.py``, ``writing.py``, ``blobs.py`` and ``schedules.py``.

Layout: one ``tasks`` table (a STRICT rowid table: payloads can be large, which suits rowid
tables better than WITHOUT ROWID).  Dates are INTEGER milliseconds since the Unix epoch (UTC),
payloads and results the task's blobs byte for byte, the error its JSON form as text; a payload
or result of ``LARGE_BLOB`` bytes or more is kept in the ``task_blobs`` table instead, its
column holding an empty marker (``BLOBS_DDL``).  The
schema version is ``PRAGMA user_version``.  ``to_row``/``from_row`` convert between tasks and
rows in ``COLUMNS`` order.

Indexes (each one costs write speed, so there are exactly these):

* due selection: ``(type, date_next_process, id) WHERE status = 'pending'`` (partial);
* retention: ``(date_retain_until, id) WHERE date_retain_until IS NOT NULL`` (partial);
* idempotency: ``UNIQUE (idempotency_key) WHERE idempotency_key IS NOT NULL`` (partial);
* query pages: ``(type, status, <sort>, id)`` and ``(status, <sort>, id)`` for the three date
  sorts, where the date_completed sort is the expression ``COALESCE(date_completed, -1)``
  (``cursor.NO_DATE``), and ``(status, id)`` for the status sort; each of them partial,
  ``WHERE status <> 'processing'``;
* processing tasks: ``(id) WHERE status = 'processing'`` (partial), for ``processing()`` and
  the processing arm of a query page.

Processing tasks stay out of the query-page indexes because a task passes through that status
on every attempt: a claim then only deletes the task's entries (instead of a delete and an
insert in each of seven indexes), and the delete or update of its outcome has no processing
entries to remove there.  With one dispatching engine per file they are few (its workers'
queues), so reading them all and sorting them costs little.

A query without a status filter, sorted by a date, is a ``UNION ALL`` of one arm per status,
which SQLite merges (each arm read in index order, the merge stopping at the page size), so
every page is a few index range reads, never a sort of all matching rows (only the processing
arm is sorted).  SQLite uses a partial index only for a query that repeats its WHERE term, so the
arms of the listed statuses repeat ``status <> 'processing'``; status values are literals taken
from ``TaskStatus``, never from the caller.
"""

from __future__ import annotations

import functools
from typing import Final, LiteralString

from taskengine.core import cursor, models
from taskengine.stores.rows import COLUMNS, Row, from_row, to_date, to_row

__all__ = [
    "BLOBS_DDL",
    "COLUMNS",
    "DDL",
    "DELETE_IDS",
    "INSERT_ROWS",
    "SCHEDULES_DDL",
    "SCHEMA_VERSION",
    "UPGRADES",
    "Row",
    "delete_fenced_sql",
    "from_row",
    "insert_sql",
    "query_sql",
    "to_date",
    "to_row",
]

#: The schema version this code writes and understands (``PRAGMA user_version``).
#: Version 2 added the ``schedules`` table (see the schedules block at the end); version 3
#: made the query-page indexes leave out processing tasks (``LISTING_INDEXES``); version 4 added
#: the ``task_blobs`` table of large payloads and results (``BLOBS_DDL``).
SCHEMA_VERSION: Final = 4

_SELECT_LIST: Final[LiteralString] = ", ".join(COLUMNS)
_STATUSES: Final = ", ".join(f"'{status.value}'" for status in models.TaskStatus)

#: The query-page indexes.  They leave out processing tasks: a claim then only removes its
#: task from them and the outcome's delete never touches them, instead of a delete and an
#: insert in each at the claim and again at the outcome.  Processing tasks are few (one
#: dispatching engine per file, at most its workers' queues), so their arm of a page reads
#: ``tasks_processing`` and sorts what it finds.
_LISTED_TERM: Final = "status <> 'processing'"
_LISTED: Final = " WHERE " + _LISTED_TERM
LISTING_INDEXES: Final[tuple[str, ...]] = (
    "CREATE INDEX tasks_type_status_created ON tasks (type, status, date_created, id)" + _LISTED,
    "CREATE INDEX tasks_type_status_modified ON tasks (type, status, date_modified, id)" + _LISTED,
    "CREATE INDEX tasks_type_status_completed"
    " ON tasks (type, status, COALESCE(date_completed, -1), id)" + _LISTED,
    "CREATE INDEX tasks_status_created ON tasks (status, date_created, id)" + _LISTED,
    "CREATE INDEX tasks_status_modified ON tasks (status, date_modified, id)" + _LISTED,
    "CREATE INDEX tasks_status_completed ON tasks (status, COALESCE(date_completed, -1), id)"
    + _LISTED,
    "CREATE INDEX tasks_status ON tasks (status, id)" + _LISTED,
    "CREATE INDEX tasks_processing ON tasks (id) WHERE status = 'processing'",
)
LISTING_NAMES: Final = tuple(statement.split()[2] for statement in LISTING_INDEXES)

#: Statements that create the current schema's tasks table and indexes, in order.
DDL: Final[tuple[str, ...]] = (
    f"""
    CREATE TABLE tasks (
        id TEXT NOT NULL PRIMARY KEY,
        type TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
        payload BLOB NOT NULL,
        result BLOB,
        error TEXT,
        date_created INTEGER NOT NULL,
        date_modified INTEGER NOT NULL,
        date_completed INTEGER,
        date_cancelled INTEGER,
        date_next_process INTEGER,
        date_retain_until INTEGER,
        retries_remaining INTEGER,
        retry_interval REAL NOT NULL,
        retain_for REAL,
        attempts INTEGER NOT NULL CHECK (attempts >= 0),
        node_identity TEXT,
        progress REAL,
        idempotency_key TEXT
    ) STRICT
    """,
    "CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX tasks_due ON tasks (type, date_next_process, id) WHERE status = 'pending'",
    "CREATE INDEX tasks_retain_until ON tasks (date_retain_until, id)"
    " WHERE date_retain_until IS NOT NULL",
    *LISTING_INDEXES,
)

_ROW_MARKS: Final = f"({', '.join('?' for _ in COLUMNS)})"
#: Most tasks one INSERT statement carries (``insert_sql``).  One statement of many rows costs
#: SQLite about a third less per row than one execution per row, and 50 rows of 19 columns
#: stay under 999 bound parameters, the limit of SQLite builds before 3.32.
INSERT_ROWS: Final = 50


@functools.lru_cache(maxsize=INSERT_ROWS)
def insert_sql(rows: int) -> str:
    """An INSERT of ``rows`` tasks (1 to ``INSERT_ROWS``): the rows' values, in order, flat."""
    if not 1 <= rows <= INSERT_ROWS:
        raise ValueError(f"an INSERT carries 1 to {INSERT_ROWS} rows, not {rows}")
    return f"INSERT INTO tasks ({_SELECT_LIST}) VALUES " + ", ".join([_ROW_MARKS] * rows)  # noqa: S608 -- constants only


#: Insert one task (all columns).
INSERT: Final = insert_sql(1)


#: Overwrite every column of one task, fenced by status and attempts.  Parameters: the row
#: (all columns, id included), then the expected status and attempts.
UPDATE_FENCED: Final = (
    f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in COLUMNS)}"  # noqa: S608 -- constants only
    " WHERE id = ? AND status = ? AND attempts = ?"
)
#: A fenced update that changes nothing (its row count still says whether the fence held).
UPDATE_FENCED_NOTHING: Final = (
    "UPDATE tasks SET id = id WHERE id = ? AND status = ? AND attempts = ?"
)
#: Delete statements by fence: (status fenced, attempts fenced) -> SQL.
DELETE: Final[dict[tuple[bool, bool], str]] = {
    (False, False): "DELETE FROM tasks WHERE id = ?",
    (True, False): "DELETE FROM tasks WHERE id = ? AND status = ?",
    (False, True): "DELETE FROM tasks WHERE id = ? AND attempts = ?",
    (True, True): "DELETE FROM tasks WHERE id = ? AND status = ? AND attempts = ?",
}
#: Most ids one ``delete_fenced_sql`` statement carries (with its two fence values, under 999
#: bound parameters).
DELETE_IDS: Final = 500


@functools.lru_cache(maxsize=64)
def delete_fenced_sql(ids: int) -> str:
    """A DELETE of ``ids`` tasks (1 to ``DELETE_IDS``) that share their fence.

    Parameters: the ids, then the expected status and attempts.  One statement deletes a
    group commit's finished tasks (retain_for=0) for about a third less than one execution
    of ``DELETE[(True, True)]`` per task.
    """
    if not 1 <= ids <= DELETE_IDS:
        raise ValueError(f"a DELETE carries 1 to {DELETE_IDS} ids, not {ids}")
    marks = ", ".join(["?"] * ids)
    return f"DELETE FROM tasks WHERE id IN ({marks}) AND status = ? AND attempts = ?"  # noqa: S608 -- constants only


#: One task by id.
SELECT_BY_ID: Final = f"SELECT {_SELECT_LIST} FROM tasks WHERE id = ?"  # noqa: S608 -- constants only
#: One task's status and retention end (no blob is read).
SELECT_STATUS: Final = "SELECT status, date_retain_until FROM tasks WHERE id = ?"
#: Whether an id is taken.
ID_EXISTS: Final = "SELECT 1 FROM tasks WHERE id = ?"
#: The id of the task holding an idempotency key.
ID_BY_KEY: Final = "SELECT id FROM tasks WHERE idempotency_key = ?"
#: The due pending tasks of a type that a claim takes, oldest due first.  Parameters: type,
#: now (ms), limit.
_DUE: Final = (
    " FROM tasks WHERE status = 'pending' AND type = ? AND date_next_process <= ?"
    " ORDER BY date_next_process, id LIMIT ?"
)
#: Those tasks' rows, each ending with its rowid (the claim updates by rowid: one B-tree
#: search fewer than by id).
SELECT_DUE: Final = f"SELECT {_SELECT_LIST}, rowid{_DUE}"
#: Only their rowids (a covering read of tasks_due).
DUE_ROWIDS: Final = f"SELECT rowid{_DUE}"
#: Payloads and results at least this long are stored out of the row, in ``task_blobs``
#: (``BLOBS_DDL``).  A payload this long that a file of schema version 3 still holds in its row
#: is not returned by ``CLAIM_DUE`` either: RETURNING stages each value it returns (a copy held
#: until the statement is reset) and the driver copies it once more, while
#: ``sqlite3.Blob.read`` fills the Python bytes straight from the pages.
LARGE_BLOB: Final = 1 << 20
#: ``COLUMNS`` with the payload NULL when it is large (the column itself is NOT NULL).
_LIGHT_LIST: Final[LiteralString] = _SELECT_LIST.replace(
    "payload,", f"CASE WHEN length(payload) < {LARGE_BLOB} THEN payload END,", 1
)
#: ``transitions.claim`` in SQL, on the tasks that ``DUE_ROWIDS`` selects, returning their new
#: rows, each ending with its rowid; a large payload comes back NULL (``LARGE_BLOB``), for
#: the caller to read by rowid.  It must change exactly what ``transitions.claim`` does
#: (``tests/contract/test_sqlite_store.py`` compares them).  Parameters: the claim's node and
#: now (ms), then those of ``DUE_ROWIDS``.
CLAIM_DUE: Final = (
    "UPDATE tasks SET status = 'processing', attempts = attempts + 1, node_identity = ?,"  # noqa: S608 -- constants only
    " date_next_process = NULL, date_modified = ?, progress = NULL"
    f" WHERE rowid IN ({DUE_ROWIDS}) RETURNING {_LIGHT_LIST}, rowid"
)
#: The earliest due time of a pending task of a type.
NEXT_DUE: Final = (
    "SELECT date_next_process FROM tasks"
    " WHERE status = 'pending' AND type = ? AND date_next_process IS NOT NULL"
    " ORDER BY date_next_process LIMIT 1"
)
#: Delete up to ``limit`` tasks whose retention ended.  Parameters: now (ms), limit.
PURGE: Final = (
    "DELETE FROM tasks WHERE rowid IN ("
    " SELECT rowid FROM tasks WHERE date_retain_until IS NOT NULL AND date_retain_until <= ?"
    " ORDER BY date_retain_until, id LIMIT ?)"
    " RETURNING id, date_retain_until"
)
#: The earliest retention end.
NEXT_EXPIRY: Final = (
    "SELECT date_retain_until FROM tasks WHERE date_retain_until IS NOT NULL"
    " ORDER BY date_retain_until LIMIT 1"
)
#: Visible tasks summarised per (type, status), for ``count_tasks``.
#: Parameter: ``now`` (ms).  Two arms, as the listed statuses' groups come in the order of
#: tasks_type_status_created (no sort) only when the query repeats that index's WHERE term.
_COUNT: Final = (
    "SELECT type, status, COUNT(*), SUM(attempts), MIN(date_created), MIN(date_next_process)"
    " FROM tasks WHERE (date_retain_until IS NULL OR date_retain_until > :now) AND "
)
COUNT_TASKS: Final = (
    f"{_COUNT}{_LISTED_TERM} GROUP BY type, status"
    f" UNION ALL {_COUNT}status = 'processing' GROUP BY type, status"
)
#: Every processing task.
SELECT_PROCESSING: Final = f"SELECT {_SELECT_LIST} FROM tasks WHERE status = 'processing'"  # noqa: S608 -- constants only
#: Tables and indexes in the file (to recognise a database that is not ours).
LIST_OBJECTS: Final = "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"

#: Sort field (``cursor.SORT_FIELDS`` values) -> the SQL expression the indexes are built on.
SORT_EXPRESSIONS: Final[dict[str, LiteralString]] = {
    "date_created": "date_created",
    "date_modified": "date_modified",
    "date_completed": f"COALESCE(date_completed, {cursor.NO_DATE})",
    "status": "status",
}
_STATUS_ORDER: Final = tuple(models.TaskStatus)
_DIRECTIONS: Final[dict[models.SortDirection, tuple[LiteralString, LiteralString]]] = {
    models.SortDirection.ASCENDING: ("ASC", ">"),
    models.SortDirection.DESCENDING: ("DESC", "<"),
}


def query_sql(spec: cursor.QuerySpec, *, keyset: bool) -> str:
    """The SQL of one query page for ``spec``.

    Named parameters: ``type`` and ``status`` (when the spec filters on them), ``now`` (ms, for
    retention), ``value`` and ``after_id`` (the cursor position, when ``keyset``), ``limit``.
    The sort expression and direction come only from the fixed mappings above; a field outside
    them raises ``KeyError``.

    Args:
        spec: the validated query.
        keyset: whether the page starts after a cursor position.

    Returns:
        The statement text.
    """
    expression = SORT_EXPRESSIONS[spec.sort_field]
    direction, comparison = _DIRECTIONS[spec.direction]
    where: list[str] = []
    if spec.task_type is not None:
        where.append("type = :type")
    where.append("(date_retain_until IS NULL OR date_retain_until > :now)")
    if keyset:
        if expression not in COLUMNS:
            # The redundant single-column bound lets SQLite use the index range on the
            # expression index of date_completed; a row value alone is only a filter there.
            # On a plain column the bound would win over the row value and turn the seek into
            # a scan of every tie (a create_many batch shares one date_created).
            where.append(f"{expression} {comparison}= :value")
        where.append(f"({expression}, id) {comparison} (:value, :after_id)")
    order = f" ORDER BY sort_key {direction}, id {direction} LIMIT :limit"
    select = f"SELECT {_SELECT_LIST}, {expression} AS sort_key FROM tasks WHERE "  # noqa: S608 -- constants only
    if spec.status is not None:
        return select + " AND ".join([*_status_terms(spec.status, bound=True), *where]) + order
    if spec.sort_field == "status":
        # The listed statuses in one walk of tasks_status, merged with the processing arm.
        listed = [_LISTED_TERM, *where]
        processing = [*_status_terms(models.TaskStatus.PROCESSING), *where]
        return (
            select
            + " AND ".join(listed)
            + " UNION ALL "
            + select
            + " AND ".join(processing)
            + order
        )
    # No status filter: one arm per status, merged in index order (see the module docstring).
    arms = (select + " AND ".join([*_status_terms(status), *where]) for status in _STATUS_ORDER)
    return " UNION ALL ".join(arms) + order


def _status_terms(status: models.TaskStatus, *, bound: bool = False) -> list[str]:
    """The terms that select one status and let SQLite pick that status's indexes.

    SQLite uses a partial index only when the query repeats the index's WHERE term, so a
    listed status also states ``status <> 'processing'``.  Processing is written as a literal,
    not bound: SQLite cannot prove a bound value matches ``tasks_processing``'s WHERE.  Status
    text comes from ``TaskStatus`` only.
    """
    if status is models.TaskStatus.PROCESSING:
        return ["status = 'processing'"]
    return [
        "status = :status" if bound else f"status = '{status.value}'",
        _LISTED_TERM,
    ]


#: Dict lookups instead of enum calls and ``.value`` (a descriptor): ``to_row`` and
#: ``from_row`` run for every row written or read.
def changed_update(
    old: tuple[object, ...], new: tuple[object, ...], *, fenced: bool, by_rowid: bool = False
) -> tuple[str, tuple[object, ...]] | None:
    """An UPDATE of only the columns whose values differ between two rows of one task.

    SQLite rewrites the entries of every index over a column named in ``SET``, changed or
    not; naming only the changed columns keeps a claim or an outcome from touching the other
    indexes (and from copying an unchanged payload blob).  None when nothing changed.  Column
    names come from ``COLUMNS`` only.  The statement's parameters are the returned values,
    then the key: the id (and the expected status and attempts when ``fenced``), or the rowid
    when ``by_rowid``.
    """
    changed = tuple([i for i in _UPDATABLE if old[i] != new[i]])
    if not changed:
        return None
    where = _WHERE_ROWID if by_rowid else _WHERE_FENCED if fenced else _WHERE_ID
    return _update_sql(changed, where), tuple([new[i] for i in changed])


_UPDATABLE: Final = range(1, len(COLUMNS))
_WHERE_ID: Final = " WHERE id = ?"
_WHERE_FENCED: Final = " WHERE id = ? AND status = ? AND attempts = ?"
_WHERE_ROWID: Final = " WHERE rowid = ?"


@functools.lru_cache(maxsize=512)
def _update_sql(changed: tuple[int, ...], where: LiteralString) -> str:
    # Cached: claims and outcomes change the same few column sets over and over.
    assignments = ", ".join(f"{COLUMNS[i]} = ?" for i in changed)
    return f"UPDATE tasks SET {assignments}{where}"  # noqa: S608 -- constants only


# -- large blobs (added in schema version 4) ---------------------------------------------
# A payload or result of ``LARGE_BLOB`` bytes or more lives in ``task_blobs``, and its column
# in ``tasks`` holds an empty blob, the marker.  A row write that carries a blob costs SQLite
# two copies of it at once (the driver's bound copy and the whole record it builds), and any
# later UPDATE of the row rewrites the record again; a blob that is the last column of a row of
# its own is inserted as ``zeroblob(n)`` (no copy) and filled, and read, in place through
# ``sqlite3.Blob``.  An empty marker with no ``task_blobs`` row is a genuinely empty value.

#: Statements that create the large-blob table and its trigger (a new file, the 3 -> 4 upgrade).
BLOBS_DDL: Final[tuple[str, ...]] = (
    """
    CREATE TABLE task_blobs (
        task_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('payload', 'result')),
        data BLOB NOT NULL,
        PRIMARY KEY (task_id, kind)
    ) STRICT
    """,
    # Every way a task row goes (an outcome's delete, a purge, a fenced delete) takes its
    # blobs with it in the same statement.  The WHEN clause spares the blob index a lookup on
    # the delete of a task without a marker, the usual task.
    """
    CREATE TRIGGER tasks_delete_blobs AFTER DELETE ON tasks
    WHEN old.payload = x'' OR old.result = x''
    BEGIN
        DELETE FROM task_blobs WHERE task_id = old.id;
    END
    """,
)
#: Add an empty large blob of one task, to be filled in place.  Parameters: task id, kind,
#: length.  A stale blob of the same kind is replaced.
INSERT_BLOB: Final = (
    "INSERT OR REPLACE INTO task_blobs (task_id, kind, data) VALUES (?, ?, zeroblob(?))"
)
#: Forget one large blob of a task.  Parameters: task id, kind.
DELETE_BLOB: Final = "DELETE FROM task_blobs WHERE task_id = ? AND kind = ?"
#: The rowids of a task's large blobs, by kind.  Parameter: task id.
BLOB_ROWIDS: Final = "SELECT kind, rowid FROM task_blobs WHERE task_id = ?"
#: Whether any task has a large blob (one step into the table's B-tree).
ANY_BLOB: Final = "SELECT 1 FROM task_blobs LIMIT 1"


@functools.lru_cache(maxsize=64)
def blobs_of_sql(ids: int) -> str:
    """Whether any of ``ids`` tasks (1 to ``DELETE_IDS``) has a large blob; parameters: the ids."""
    if not 1 <= ids <= DELETE_IDS:
        raise ValueError(f"a lookup carries 1 to {DELETE_IDS} ids, not {ids}")
    marks = ", ".join(["?"] * ids)
    return f"SELECT 1 FROM task_blobs WHERE task_id IN ({marks}) LIMIT 1"  # noqa: S608 -- constants only


#: The blob column index in ``COLUMNS`` of each kind.
BLOB_COLUMNS: Final = {"payload": 3, "result": 4}


# -- schedules (TaskScheduler; added in schema version 2) -----------------------------------
# One row per schedule id: the fingerprint of its times, its pending slots (JSON list of
# integer milliseconds or null) and the earliest of them, on which firings compare-and-set.

#: Statements that create the schedules table (part of a new file, and the 1 -> 2 upgrade).
SCHEDULES_DDL: Final[tuple[str, ...]] = (
    """
    CREATE TABLE schedules (
        id TEXT NOT NULL PRIMARY KEY,
        times_key TEXT NOT NULL,
        slots TEXT NOT NULL,
        next_trigger INTEGER
    ) STRICT
    """,
)
#: Statements that bring a file of schema version N (the key) to version N + 1.
UPGRADES: Final[dict[int, tuple[str, ...]]] = {
    1: SCHEDULES_DDL,
    # Rebuilds the query-page indexes: on a large table this makes the first open() of the
    # new version take a while (1.4 s for 200,000 tasks on a 2-core VM), once.
    2: (*(f"DROP INDEX IF EXISTS {name}" for name in LISTING_NAMES), *LISTING_INDEXES),
    # Additive: the values already in the tasks table stay there and are read as before.
    3: BLOBS_DDL,
}
#: One schedule's id, times_key and slots.
SELECT_SCHEDULE: Final = "SELECT id, times_key, slots FROM schedules WHERE id = ?"
#: Insert or overwrite one schedule.  Parameters: id, times_key, slots, next_trigger.
UPSERT_SCHEDULE: Final = (
    "INSERT INTO schedules (id, times_key, slots, next_trigger) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET times_key = excluded.times_key, slots = excluded.slots,"
    " next_trigger = excluded.next_trigger"
)
#: Move a schedule on if it still has the expected times and next slot.  Parameters: the new
#: next_trigger, slots and times_key, then id, the expected times_key and next_trigger.
CAS_SCHEDULE: Final = (
    "UPDATE schedules SET next_trigger = ?, slots = ?, times_key = ?"
    " WHERE id = ? AND times_key = ? AND next_trigger = ?"
)
#: Forget one schedule.
DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE id = ?"
