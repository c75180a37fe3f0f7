"""Large payloads and results, stored out of the task's row (``schema.BLOBS_DDL``).

A payload or result of ``schema.LARGE_BLOB`` bytes or more is stored in the ``task_blobs``
table, its column in the task's row holding an empty marker: it is inserted as ``zeroblob(n)``
and filled in chunks through ``sqlite3.Blob``, and read back with one ``Blob.read``, in the
same transaction (or read snapshot) as the row, so that SQLite holds no copy of it on the way.
The writer's page cache is shrunk while such a blob passes (:func:`small_cache`).  Every
function here works in a transaction its caller (``SqliteStore``) holds.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from typing import Final

from taskengine.core import models
from taskengine.stores.sqlite import schema

__all__ = [
    "BLOB_CACHE_KIB",
    "BLOB_CHUNK",
    "WRITER_CACHE_KIB",
    "BlobWrites",
    "apply_blob_writes",
    "blob_writes",
    "filled",
    "has_marker",
    "is_large",
    "marked",
    "small_cache",
    "write_task_blobs",
]

logger = logging.getLogger(__name__)


#: Page cache of the writer connection, in KiB.
WRITER_CACHE_KIB: Final = 65536

#: The writer's page cache while it writes, reads or deletes a large blob (``schema.LARGE_BLOB``):
#: the blob's pages would otherwise fill the whole cache above, up to 64 MiB held by the
#: process for as long as it runs.
BLOB_CACHE_KIB: Final = 1024

#: Bytes written to a large blob per ``Blob.write`` call.
BLOB_CHUNK: Final = 1 << 20

#: (kind, the value to store out of the row, or None to remove a stale one) per blob column.
BlobWrites = tuple[tuple[str, bytes | None], ...]


def is_large(value: object) -> bool:
    """Whether ``value`` is a blob stored out of the row (``schema.LARGE_BLOB`` or more)."""
    return isinstance(value, bytes) and len(value) >= schema.LARGE_BLOB


def marked(row: tuple[object, ...]) -> tuple[object, ...]:
    """``row`` with each large blob replaced by the empty marker (``schema.BLOBS_DDL``)."""
    if not (is_large(row[3]) or is_large(row[4])):
        return row
    values = list(row)
    for index in schema.BLOB_COLUMNS.values():
        if is_large(values[index]):
            values[index] = b""
    return tuple(values)


def blob_writes(old: schema.Row | None, new: tuple[object, ...]) -> BlobWrites:
    """What a write of row ``new`` over row ``old`` (None: unknown) does in ``task_blobs``.

    A changed large value is stored out of the row; a changed value that is not large removes
    the blob it replaces, which is only there if the old value was large (or is unknown).
    """
    writes: list[tuple[str, bytes | None]] = []
    for kind, index in schema.BLOB_COLUMNS.items():
        value = new[index]
        if old is not None and old[index] == value:
            continue
        if is_large(value):
            assert isinstance(value, bytes)
            writes.append((kind, value))
        elif old is None or is_large(old[index]):
            writes.append((kind, None))
    return tuple(writes)


@contextlib.contextmanager
def small_cache(conn: sqlite3.Connection) -> Iterator[None]:
    """The writer's page cache shrunk to ``BLOB_CACHE_KIB`` while a large blob passes."""
    conn.execute(f"PRAGMA cache_size = {-BLOB_CACHE_KIB}")
    try:
        yield
    finally:
        try:
            conn.execute(f"PRAGMA cache_size = {-WRITER_CACHE_KIB}")
        except sqlite3.Error:
            # The error that ended the block (if any) is the one to report; a small cache
            # only slows the writer down.
            logger.warning("could not restore the writer's page cache size", exc_info=True)


def apply_blob_writes(conn: sqlite3.Connection, task_id: str, writes: BlobWrites) -> None:
    """Store or remove a task's out-of-row blobs, in the open transaction.

    A blob is inserted as ``zeroblob(n)`` (SQLite writes zeroed pages, holding no copy) and
    filled in place in chunks: binding the value instead would cost two copies of it.
    """
    # A stale blob's delete reads its pages too (to follow their chain).
    with small_cache(conn):
        for kind, value in writes:
            if value is None:
                conn.execute(schema.DELETE_BLOB, (task_id, kind))
                continue
            rowid = conn.execute(schema.INSERT_BLOB, (task_id, kind, len(value))).lastrowid
            assert rowid is not None
            view = memoryview(value)
            with conn.blobopen("task_blobs", "data", rowid) as blob:
                for start in range(0, len(view), BLOB_CHUNK):
                    blob.write(view[start : start + BLOB_CHUNK])


def write_task_blobs(conn: sqlite3.Connection, task: models.BackgroundTask) -> None:
    """Store the large blobs of a task just inserted (its row holds their markers)."""
    writes = tuple(
        (kind, value)
        for kind, value in (("payload", task.payload_blob), ("result", task.result_blob))
        if value is not None and len(value) >= schema.LARGE_BLOB
    )
    if writes:
        apply_blob_writes(conn, task.id, writes)


def has_marker(row: schema.Row) -> bool:
    """Whether the row's payload or result is the empty marker of an out-of-row blob."""
    return bool(row[3] == b"" or row[4] == b"")


def filled(conn: sqlite3.Connection, row: schema.Row, *, writer: bool = False) -> schema.Row:
    """``row`` with its large blobs read in, in the caller's transaction.

    A marker (``schema.BLOBS_DDL``) is filled from ``task_blobs``; a payload that
    ``schema.CLAIM_DUE`` left NULL (a large payload stored in the row by an older version; the
    row then ends with its rowid) from the row itself.  ``Blob.read`` copies the pages straight
    into the one ``bytes`` it returns: no SQLite value and no staged copy is made on the way.
    On the writer (``writer``) the page cache is kept small meanwhile (``small_cache``).
    """
    legacy = row[3] is None
    if not legacy and not has_marker(row):
        return row
    values = list(row)
    with small_cache(conn) if writer else contextlib.nullcontext():
        if legacy:
            with conn.blobopen("tasks", "payload", row[-1], readonly=True) as blob:
                values[3] = blob.read()
        for kind, rowid in conn.execute(schema.BLOB_ROWIDS, (row[0],)).fetchall():
            index = schema.BLOB_COLUMNS[kind]
            if values[index] == b"":
                with conn.blobopen("task_blobs", "data", rowid, readonly=True) as blob:
                    values[index] = blob.read()
    return tuple(values)
