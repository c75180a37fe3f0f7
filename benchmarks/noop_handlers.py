"""Handlers used by the benchmarks (importable by worker processes)."""

from __future__ import annotations

from typing import Any


def noop(payload: Any) -> Any:
    return payload
