"""Fixtures of the integration tests: marker directories for hook handlers, gates."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import taskengine
from tests.conftest import until, worker_pids
from tests.handlers import hooks

from .support import Gate

# Set at import (collection) time, before any engine starts the fork server whose environment
# every worker inherits; see tests/handlers/hooks.py.
if not os.environ.get(hooks.ROOT_VARIABLE):
    _root = tempfile.mkdtemp(prefix="taskengine-hooks-")
    os.environ[hooks.ROOT_VARIABLE] = _root
    atexit.register(shutil.rmtree, _root, ignore_errors=True)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """A fresh directory where tests.handlers.hooks writes this test's marker files."""
    directory = tmp_path / "markers"
    directory.mkdir()
    hooks.pointer_file().write_text(str(directory))
    return directory


@pytest.fixture
def make_gate(tmp_path: Path) -> Iterator[Callable[[str], Gate]]:
    """Factory of gates (files) that hold a gated handler until the test opens them."""
    made: list[Gate] = []

    def make(name: str) -> Gate:
        gate = Gate(tmp_path, name)
        made.append(gate)
        return gate

    yield make
    for gate in made:  # never leave a handler waiting for its gate's 30 s limit
        gate.open()


@pytest.fixture
def make_engine() -> Iterator[Callable[..., taskengine.TaskEngine]]:
    """Factory of started MemoryStore engines with custom options; all stopped after."""
    made: list[taskengine.TaskEngine] = []

    def make(**options: object) -> taskengine.TaskEngine:
        engine = taskengine.TaskEngine(taskengine.MemoryStore(), **options)  # type: ignore[arg-type]
        made.append(engine)
        return engine.start()

    yield make
    for engine in made:
        engine.stop(timeout=10)
    until(lambda: not worker_pids(), timeout=10)
