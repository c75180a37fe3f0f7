"""Logging set-up of the ``taskengine`` command (the library itself never configures logging).

Records go to stderr, one line each.  The structured fields the library attaches with
``extra=`` (``task_id``, ``task_type``, ``node``) are appended as ``key=value`` pairs, so the
lines stay greppable by task.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

__all__ = ["EXTRA_FIELDS", "StructuredFormatter", "configure", "parse_level"]

#: The ``extra`` fields the library logs with, in the order they are printed.
EXTRA_FIELDS: Final = ("task_id", "task_type", "node")
_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StructuredFormatter(logging.Formatter):
    """The usual one-line format plus `` key=value`` for each structured field present."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` and append its structured fields."""
        text = super().format(record)
        pairs = [
            f"{name}={getattr(record, name)}"
            for name in EXTRA_FIELDS
            if getattr(record, name, None) is not None
        ]
        if not pairs:
            return text
        head, sep, tail = text.partition("\n")  # keep a traceback below the fields
        return f"{head} [{' '.join(pairs)}]{sep}{tail}"


def parse_level(text: str) -> int | None:
    """The numeric level of a name such as ``info`` or ``WARNING``; None if unknown."""
    level = logging.getLevelNamesMapping().get(text.upper())
    return level


def configure(level: int) -> None:
    """Send the ``taskengine`` loggers' records at ``level`` and above to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
