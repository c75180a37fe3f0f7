"""PostgreSQL test support: the server's DSN, a fresh schema per test, backend termination.

The DSN comes from ``TASKENGINE_TEST_POSTGRES_DSN``.  Without it (or without a usable server)
the PostgreSQL tests skip with a visible reason, except under ``CI=true``, where they fail: a
CI run must never pass by skipping them.  Every test gets its own schema (and its own
``application_name``), dropped afterwards, so parallel runs by other people never interfere.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

DSN_VARIABLE = "TASKENGINE_TEST_POSTGRES_DSN"
_checked: dict[str, str | None] = {}


def dsn() -> str:
    """The test server's DSN; skips (or fails under CI) when there is no usable server."""
    value = os.environ.get(DSN_VARIABLE)
    problem = None if value else f"{DSN_VARIABLE} is not set"
    if value and value not in _checked:
        try:
            import psycopg

            with psycopg.connect(value, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            _checked[value] = None
        except Exception as exc:  # any failure: no usable server
            _checked[value] = f"PostgreSQL at {DSN_VARIABLE} is not usable: {exc}"
    if value and problem is None:
        problem = _checked[value]
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs PostgreSQL: {problem}")
        pytest.skip(problem)
    assert value is not None
    return value


def new_schema_name() -> str:
    """A schema name no other run uses."""
    return f"te_test_{uuid.uuid4().hex[:16]}"


def drop_schema(dsn_: str, schema: str) -> None:
    """Drop a test schema and everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn_, autocommit=True, connect_timeout=5) as conn:
        terminate_backends(dsn_, schema, conn=conn)
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def fresh_schema() -> Iterator[tuple[str, str]]:
    """``(dsn, schema)`` of a schema dropped on exit (connections named after it are ended)."""
    dsn_ = dsn()
    schema = new_schema_name()
    try:
        yield dsn_, schema
    finally:
        drop_schema(dsn_, schema)


def terminate_backends(dsn_: str, application_name: str, conn: object = None) -> int:
    """End every server session whose application_name is ``application_name``; return how many."""
    import psycopg

    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = %s AND pid <> pg_backend_pid()"
    )
    if conn is not None:
        assert isinstance(conn, psycopg.Connection)
        row = conn.execute(query, (application_name,)).fetchone()
    else:
        with psycopg.connect(dsn_, autocommit=True, connect_timeout=5) as own:
            row = own.execute(query, (application_name,)).fetchone()
    return int(row[0]) if row else 0


def make_store(dsn_: str, schema: str, **options: object):  # type: ignore[no-untyped-def]
    """A PostgresStore on ``schema`` whose connections are named after the schema."""
    import taskengine

    options.setdefault("application_name", schema)
    return taskengine.PostgresStore(dsn_, schema=schema, **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def outage_role(dsn_: str, schema: str) -> Iterator[str]:
    """A login role of its own that owns ``schema``; yields a DSN that connects as it.

    ``set_login(dsn_, schema, False)`` then makes an outage for this role only: no new session
    is accepted and (with ``terminate_backends``) the open ones end, while the shared server
    goes on serving everyone else.  The role and its schema are dropped on exit.
    """
    import psycopg
    from psycopg import conninfo, sql

    role = sql.Identifier(schema)
    with psycopg.connect(dsn_, autocommit=True, connect_timeout=5) as conn:
        database = conn.info.dbname
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), role)
        )
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(role, role))
    params = conninfo.conninfo_to_dict(dsn_)
    params["user"] = schema
    try:
        yield conninfo.make_conninfo(**params)
    finally:
        with psycopg.connect(dsn_, autocommit=True, connect_timeout=5) as conn:
            terminate_backends(dsn_, schema, conn=conn)
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(role))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE {}").format(role))


def set_login(dsn_: str, role: str, allowed: bool) -> None:
    """Let ``role`` log in again, or refuse its new sessions."""
    import psycopg
    from psycopg import sql

    statement = "ALTER ROLE {} LOGIN" if allowed else "ALTER ROLE {} NOLOGIN"
    with psycopg.connect(dsn_, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(role)))
