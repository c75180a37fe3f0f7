"""A SqliteStore whose writer connection fails on request: injected disk-full (fault-27) errors.

``WriteFaults`` counts every statement the store's writer connection runs (``BEGIN IMMEDIATE``,
the writes, the reads inside a write transaction, ``COMMIT``; never ``ROLLBACK``) and raises
``sqlite3.OperationalError("database or disk is full")`` *instead of* running the chosen ones:
the k-th statement after ``arm(k)``, or every statement while ``outage`` is on.  The error comes
from inside the real store's transaction code, so its ROLLBACK and error wrapping are what is
tested, not a stand-in.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from typing import Any

import taskengine

#: The SqliteStore methods that write (the call sites a fault is attributed to).
WRITE_SITES = ("insert_many", "apply_and_claim", "apply", "purge_expired")
DISK_FULL = "database or disk is full"


def _site() -> str:
    """The SqliteStore write method on the current call stack."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name in WRITE_SITES and "sqlite" in frame.f_code.co_filename:
            return frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return "other"


class WriteFaults:
    """Which writer statements fail, and a record of the ones that did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._fail_at: int | None = None
        self._match: tuple[str, str] | None = None
        self.after = False  # the matched statement runs, then the error is raised (ambiguous)
        self.outage = False
        self.statements = 0  # every statement counted, failed or not
        self.fired: list[tuple[str, str]] = []  # (write site, first SQL word)

    def arm(self, k: int) -> None:
        """Fail the k-th statement from now (once)."""
        with self._lock:
            self._count = 0
            self._fail_at = k
            self.fired = []

    def arm_match(self, site: str, word: str, *, after: bool = False) -> None:
        """Fail the next statement starting with ``word`` run by the write method ``site``.

        With ``after``, the statement runs first and the error comes after it: a ``COMMIT``
        that committed but reported a failure (faults.md#fault-30, the ambiguous commit).
        """
        with self._lock:
            self._fail_at = None
            self._match = (site, word)
            self.after = after
            self.fired = []

    def disarm(self) -> None:
        """Fail nothing (unless ``outage`` is on)."""
        with self._lock:
            self._fail_at = None
            self._match = None
            self.after = False

    def check(self, sql: str, *, ran: bool = False) -> None:
        """Raise the disk-full error if this statement is one that fails (``ran``: the check
        after the statement ran, which fails only an ``after`` match)."""
        word = sql.split(None, 1)[0].upper() if sql.strip() else ""
        if word == "ROLLBACK" or ran != self.after or (ran and self._match is None):
            return
        with self._lock:
            if not ran:
                self._count += 1
                self.statements += 1
            site = _site()
            if self._match == (site, word):
                self._match = None
            elif not self.outage and self._count != self._fail_at:
                return
            self.fired.append((site, word))
        raise sqlite3.OperationalError(DISK_FULL)


class FaultyConnection:
    """Wraps the writer ``sqlite3.Connection``: each statement first asks ``WriteFaults``."""

    def __init__(self, conn: sqlite3.Connection, faults: WriteFaults) -> None:
        self._conn = conn
        self._faults = faults

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._faults.check(sql)
        cursor = self._conn.execute(sql, *args)
        self._faults.check(sql, ran=True)
        return cursor

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._faults.check(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class FaultySqliteStore(taskengine.SqliteStore):
    """A real ``SqliteStore`` whose writes fail as ``faults`` says."""

    def __init__(self, path: Any, faults: WriteFaults, **options: Any) -> None:
        super().__init__(path, **options)
        self.faults = faults

    def open(self) -> None:
        super().open()
        writer = self._writer
        if writer is not None and not isinstance(writer, FaultyConnection):
            self._writer = FaultyConnection(writer, self.faults)  # type: ignore[assignment]
