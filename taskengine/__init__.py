"""taskengine: a multiprocess background-task engine with a durable task table."""

from __future__ import annotations

__version__ = "0.1.0"
