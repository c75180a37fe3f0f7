"""Keyset pagination: the whitelist of sort fields, each task's sort key, and opaque cursors.

A cursor names the last task of a page by its sort key and id, plus a fingerprint of the query
it came from.  Decoding checks a strict schema and the fingerprint, so a tampered cursor, or one
from another query or sort, is a ``TaskValidationError`` and never reaches a store.  Every store
pages with the same keys, so cursors behave identically everywhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Final

import attrs

from taskengine.core import clock, errors, models

__all__ = [
    "SORT_FIELDS",
    "CursorPosition",
    "QuerySpec",
    "decode_cursor",
    "encode_cursor",
    "page_parameters",
    "resolve_sort_property",
    "sort_key",
]

#: Public sort names (snake_case and camelCase) mapped to the canonical field.
SORT_FIELDS: Final[dict[str, str]] = {
    "date_created": "date_created",
    "dateCreated": "date_created",
    "date_modified": "date_modified",
    "dateModified": "date_modified",
    "date_completed": "date_completed",
    "dateCompleted": "date_completed",
    "status": "status",
}

_ID_RE = re.compile(r"[0-9a-f]{32}")
_MAX_CURSOR_LENGTH = 512
_CURSOR_VERSION = 1
#: Sort value of a task that has no completion date (sorts before every real date).
NO_DATE: Final = -1

SortValue = int | str


def resolve_sort_property(value: object) -> str:
    """Map a public sort name to its canonical field; ``TaskValidationError`` otherwise."""
    if isinstance(value, str) and value in SORT_FIELDS:
        return SORT_FIELDS[value]
    raise errors.TaskValidationError(
        "sort_property",
        value,
        "expected one of date_created, date_modified, date_completed, status",
    )


@attrs.frozen(kw_only=True)
class QuerySpec:
    """A validated query: filters and order (the part a cursor must belong to)."""

    task_type: str | None
    status: models.TaskStatus | None
    sort_field: str
    direction: models.SortDirection

    def fingerprint(self) -> str:
        """A short digest that ties a cursor to this query."""
        text = json.dumps(
            [
                self.task_type,
                None if self.status is None else self.status.value,
                self.sort_field,
                self.direction.value,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class CursorPosition:
    """Where the previous page ended: the sort value and id of its last task."""

    value: SortValue
    task_id: str


def sort_key(task: models.BackgroundTask, field: str) -> tuple[SortValue, str]:
    """The total order key of ``task`` for ``field``: (sort value, id)."""
    if field == "status":
        return task.status.value, task.id
    moment = getattr(task, field)
    return (NO_DATE if moment is None else clock.to_millis(moment)), task.id


def encode_cursor(spec: QuerySpec, position: CursorPosition) -> str:
    """Return the opaque cursor for ``position`` within the query ``spec``."""
    body = {
        "v": _CURSOR_VERSION,
        "q": spec.fingerprint(),
        "k": position.value,
        "i": position.task_id,
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(spec: QuerySpec, cursor: object) -> CursorPosition:
    """Check and decode a cursor made by :func:`encode_cursor` for the same query."""

    def bad(reason: str) -> errors.TaskValidationError:
        return errors.TaskValidationError("cursor", cursor, reason)

    if not isinstance(cursor, str):
        raise bad(f"expected a str from a previous query, got {type(cursor).__name__}")
    if not cursor or len(cursor) > _MAX_CURSOR_LENGTH:
        raise bad("not a cursor returned by query")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise bad("not a cursor returned by query") from exc
    if not isinstance(body, dict) or set(body) != {"v", "q", "k", "i"}:
        raise bad("not a cursor returned by query")
    if body["v"] != _CURSOR_VERSION:
        raise bad("cursor version not supported")
    if body["q"] != spec.fingerprint():
        raise bad("cursor belongs to a different query or sort")
    task_id, value = body["i"], body["k"]
    if not isinstance(task_id, str) or not _ID_RE.fullmatch(task_id):
        raise bad("malformed cursor")
    if spec.sort_field == "status":
        if not isinstance(value, str) or value not in {s.value for s in models.TaskStatus}:
            raise bad("malformed cursor")
    elif isinstance(value, bool) or not isinstance(value, int) or not NO_DATE <= value < 2**53:
        raise bad("malformed cursor")
    return CursorPosition(value=value, task_id=task_id)


def page_parameters(
    spec: QuerySpec, after: CursorPosition | None, limit: int, now_ms: int
) -> dict[str, object]:
    """The named parameters of a SQL store's keyset page query.

    ``now`` and ``limit`` always; ``type``, ``status``, ``value`` and ``after_id`` when ``spec``
    filters on them or ``after`` names a position.
    """
    params: dict[str, object] = {"now": now_ms, "limit": limit}
    if spec.task_type is not None:
        params["type"] = spec.task_type
    if spec.status is not None:
        params["status"] = spec.status.value
    if after is not None:
        params.update(value=after.value, after_id=after.task_id)
    return params
