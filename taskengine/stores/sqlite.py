"""Placeholder: replaced by the SqliteStore implementation."""

from __future__ import annotations


class SqliteStore:
    """Not implemented yet."""
