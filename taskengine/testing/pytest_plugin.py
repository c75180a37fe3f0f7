"""The taskengine pytest plugin (entry point ``pytest11``) and its three fixtures.

The fixtures are ``fake_clock``, ``inline_engine`` and ``engine``.
It is inert unless a test asks for one of its fixtures: loading it registers fixtures and
nothing else (no hooks, no options, no engine or thread started).  A project's own fixture of
the same name (in a ``conftest.py``) overrides the plugin's, as pytest always does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskengine.coordinator import engine as engine_module
from taskengine.core.clock import FakeClock
from taskengine.stores.memory.store import MemoryStore

__all__ = ["engine", "fake_clock", "inline_engine"]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A ``FakeClock`` at the current real time; it moves only with ``advance``."""
    return FakeClock()


@pytest.fixture
def inline_engine(fake_clock: FakeClock) -> Iterator[engine_module.TaskEngine]:
    """A started inline engine on a ``MemoryStore`` and the ``fake_clock``; stopped after.

    Handlers run in the test's thread when it calls ``inline_engine.run_until_idle()``.
    """
    eng = engine_module.TaskEngine(MemoryStore(), execution="inline", clock=fake_clock)
    eng.start()
    yield eng
    eng.stop()


@pytest.fixture
def engine() -> Iterator[engine_module.TaskEngine]:
    """A started engine with real worker processes on a ``MemoryStore``; stopped after."""
    eng = engine_module.TaskEngine(MemoryStore())
    eng.start()
    yield eng
    eng.stop(timeout=10)
