"""The PostgreSQL store's connection pool: session settings, broken sessions, closing."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

import taskengine
from taskengine.core import errors
from tests.conftest import until
from tests.postgres import support as pg

pytestmark = pytest.mark.postgres


def test_sessions_carry_keepalives_and_an_idle_in_transaction_timeout_from_the_lease(
    schema: tuple[str, str],
) -> None:
    dsn, name = schema
    store = pg.make_store(dsn, name, lease_timeout=6.0)
    store.open()
    try:
        with store._pool.connection() as conn:
            shown = {
                setting: conn.execute(
                    sql.SQL("SHOW {}").format(sql.Identifier(setting))
                ).fetchone()[0]  # type: ignore[index]
                for setting in (
                    "search_path",
                    "idle_in_transaction_session_timeout",
                    "tcp_keepalives_idle",
                    "tcp_keepalives_interval",
                    "tcp_keepalives_count",
                    "tcp_user_timeout",
                )
            }
            client = {
                option.keyword.decode(): (option.val or b"").decode() for option in conn.pgconn.info
            }
    finally:
        store.close()
    assert shown == {
        "search_path": f'"{name}"',
        "idle_in_transaction_session_timeout": "6s",
        "tcp_keepalives_idle": "2",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "6000",
    }
    assert client["keepalives"] == "1"
    assert client["keepalives_idle"] == "2"
    assert client["tcp_user_timeout"] == "6000"


def test_a_transaction_left_open_loses_its_session_and_its_locks_after_the_lease(
    schema: tuple[str, str],
) -> None:
    """A client cut off mid-transaction must not keep row locks (and the claims they guard)."""
    dsn, name = schema
    store = pg.make_store(dsn, name, lease_timeout=1.0)
    engine = taskengine.TaskEngine(store)
    try:
        task_id = engine.create("anything", None)
        lock = sql.SQL("SELECT id FROM {} WHERE id = %s FOR UPDATE NOWAIT").format(
            sql.Identifier(name, "tasks")
        )
        with store._pool.connection() as stalled:
            stalled.execute("BEGIN")
            stalled.execute(lock, (task_id,))

            def lockable() -> bool:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as other:
                    try:
                        with other.transaction():
                            other.execute(lock, (task_id,))
                    except psycopg.errors.LockNotAvailable:
                        return False
                return True

            assert not lockable()
            until(lockable, timeout=10, step=0.1)
            with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
                stalled.execute("SELECT 1")
            assert stalled.broken
        # The pool discarded the dead session: the store works on.
        assert engine.get(task_id) is not None
    finally:
        engine.stop()


def test_after_every_session_is_ended_the_next_calls_succeed(schema: tuple[str, str]) -> None:
    dsn, name = schema
    engine = taskengine.TaskEngine(pg.make_store(dsn, name))
    try:
        task_id = engine.create("anything", None)
        for _ in range(3):
            assert pg.terminate_backends(dsn, name) >= 1
            assert engine.get(task_id) is not None
            assert engine.create("anything", None)
    finally:
        engine.stop()


def test_a_closed_store_refuses_calls_and_opens_again(schema: tuple[str, str]) -> None:
    dsn, name = schema
    store = pg.make_store(dsn, name)
    store.open()
    store.close()
    with pytest.raises(errors.StoreError, match="closed"), store._pool.connection():
        pass
    store.open()
    try:
        assert store.get("no-such-task") is None
    finally:
        store.close()


def test_no_connection_within_the_connect_timeout_is_a_store_error_without_the_password() -> None:
    store = taskengine.PostgresStore(
        "postgresql://someone:s3cret-pw@127.0.0.1:1/nothing", connect_timeout=1
    )
    with pytest.raises(errors.StoreError, match="no connection within 1s") as caught:
        store._pool.connection().__enter__()
    assert "s3cret-pw" not in str(caught.value)
    store.close()


def test_a_missing_psycopg_pool_names_the_extra() -> None:
    code = (
        "import sys, taskengine\n"
        "sys.modules['psycopg_pool'] = None\n"
        "try:\n"
        "    taskengine.PostgresStore('postgresql://localhost/x')\n"
        "except taskengine.StoreError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "psycopg_pool is missing" in done.stdout
    assert "taskengine[postgres]" in done.stdout
