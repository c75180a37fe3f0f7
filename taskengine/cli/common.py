"""What every ``taskengine`` command shares: the store URL, errors with exit codes, output.

The store is named by a URL (``--store`` or ``TASKENGINE_STORE``):

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (default
  ``sqlite:///taskengine.db``, the file ``taskengine.db`` in the current directory);
* ``memory:`` (an empty, throw-away store; for trying commands out);
* ``postgresql://…`` or ``postgres://…`` (passed whole to ``taskengine.PostgresStore``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs

import taskengine
from taskengine.core import codec, errors, models
from taskengine.stores import base

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "DEFAULT_STORE",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "SCHEMA_ENV",
    "STORE_ENV",
    "CliError",
    "add_store_option",
    "console",
    "describe",
    "engine_on",
    "offline_engine",
    "open_store",
    "print_json",
    "scrub",
    "store_url",
    "table",
    "task_json",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
#: The environment variable that names the store when ``--store`` is not given.
STORE_ENV: Final = "TASKENGINE_STORE"
#: The PostgreSQL schema of ``postgresql://`` stores (``PostgresStore(schema=...)``).
SCHEMA_ENV: Final = "TASKENGINE_PG_SCHEMA"
DEFAULT_STORE: Final = "sqlite:///taskengine.db"


class CliError(Exception):
    """A failure the command reports as one line, with its exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def store_url(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The store URL to use: ``--store``, else ``TASKENGINE_STORE``, else the default."""
    env = os.environ if environ is None else environ
    return given or env.get(STORE_ENV) or DEFAULT_STORE


def open_store(url: str) -> base.TaskStore:
    """Build the store a URL names (``open()`` is left to the engine).

    Raises:
        CliError: the URL is malformed (usage, exit 2) or the store cannot be built (exit 1).
    """
    if url == "memory:":
        return taskengine.MemoryStore()
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or rest == "/":
            raise CliError(
                f"bad store URL {url!r}: expected sqlite:///relative.db or sqlite:////abs.db",
                EXIT_USAGE,
            )
        return taskengine.SqliteStore(rest[1:])
    if url.startswith(("postgresql://", "postgres://")):
        try:
            schema = os.environ.get(SCHEMA_ENV) or "taskengine"
            store: base.TaskStore = taskengine.PostgresStore(url, schema=schema)
        except errors.TaskEngineError as exc:
            raise CliError(f"cannot use the PostgreSQL store: {scrub(str(exc), url)}") from exc
        return store
    raise CliError(
        f"unknown store URL {url!r}: expected sqlite:///path.db, memory: or postgresql://...",
        EXIT_USAGE,
    )


def scrub(message: str, url: str) -> str:
    """``message`` without the store URL or its password (a DSN may hold one)."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    for secret in (url, password):
        if secret:
            message = message.replace(secret, "***")
    return message


def engine_on(
    url: str, store: base.TaskStore | None = None, **options: Any
) -> taskengine.TaskEngine:
    """``TaskEngine(store or open_store(url), **options)``; store errors become one line.

    The line never holds the URL or its password.
    """
    store = open_store(url) if store is None else store
    try:
        return taskengine.TaskEngine(store, **options)
    except errors.TaskValidationError:
        raise
    except errors.TaskEngineError as exc:
        # Opening the store failed (unreachable server, bad schema, unreadable file ...).
        raise CliError(f"cannot open the store: {scrub(str(exc), url)}") from exc


def describe(url: str) -> str:
    """A store URL for messages: SQLite paths in full, never a PostgreSQL DSN (passwords)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "PostgreSQL"
    if url.startswith("sqlite://"):
        return f"SQLite {os.path.abspath(url[len('sqlite:///') :])}"
    return "a MemoryStore"


def task_json(task: models.BackgroundTask) -> dict[str, Any]:
    """The TWIN JSON form of a task; a payload or result this process cannot decode is null.

    The CLI often runs without the application's modules, so a blob that names a class it
    cannot import is reported in an extra ``decodeError`` key instead of failing the listing.
    """
    try:
        return task.to_json()
    except errors.StoreError as exc:
        replacements: dict[str, Any] = {}
        if not _decodes(task.payload_blob):
            replacements["payload_blob"] = codec.encode(None)
        if task.result_blob is not None and not _decodes(task.result_blob):
            replacements["result_blob"] = None
        data = attrs.evolve(task, **replacements).to_json()
        data["decodeError"] = str(exc)
        return data


def _decodes(blob: bytes) -> bool:
    try:
        codec.decode(blob)
    except Exception:
        return False
    return True


def print_json(value: object, stream: TextIO | None = None) -> None:
    """Print ``value`` as indented JSON (sorted as given) on stdout."""
    out = sys.stdout if stream is None else stream
    json.dump(value, out, indent=2, default=str)
    out.write("\n")


def _need_rich() -> None:
    try:
        import rich  # noqa: F401
    except ImportError as exc:
        raise CliError(
            "tables need the rich package: pip install 'taskengine[cli]' (or use --json)"
        ) from exc


def table(**options: Any) -> Table:
    """A rich table (``CliError`` naming the extra to install when rich is missing)."""
    _need_rich()
    from rich.table import Table

    return Table(**options)


def console(stderr: bool = False) -> Console:
    """A rich console (plain text when the output is not a terminal)."""
    _need_rich()
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a test): wide enough that tables are not squeezed to 80 columns.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def add_store_option(parser: Any) -> None:
    """Add ``--store URL`` (default: ``TASKENGINE_STORE``, else ``sqlite:///taskengine.db``)."""
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"the task store: sqlite:///path.db, memory: or postgresql://... "
        f"(default: ${STORE_ENV}, else {DEFAULT_STORE})",
    )


def offline_engine(url: str) -> taskengine.TaskEngine:
    """An engine on the store that is never started: it reads and changes tasks, never runs them.

    It takes no dispatch lock, so it works next to a running ``taskengine worker`` on the same
    SQLite file (its writes wait for that worker's write lock up to the store's busy timeout).
    """
    store = open_store(url)
    if isinstance(store, taskengine.SqliteStore) and not os.path.exists(store.path):
        # Reading must not create an empty database where the user mistyped a path.
        raise CliError(f"no task store at {store.path} (check --store or ${STORE_ENV})")
    return engine_on(url, store)
