"""The pytest plugin, exercised in isolated pytest runs (pytester): fixtures, inertness."""

from __future__ import annotations

import pytest

HANDLERS = """
def double(payload):
    return payload * 2
"""

USES_FIXTURES = """
import threading
from datetime import timedelta

import taskengine
from taskengine.testing import FakeClock


def test_fake_clock(fake_clock):
    assert isinstance(fake_clock, FakeClock)
    before = fake_clock.now()
    fake_clock.advance(5)
    assert fake_clock.now() - before == timedelta(seconds=5)


def test_inline_engine(inline_engine, fake_clock):
    assert inline_engine.execution == "inline"
    inline_engine.register_handler("double", "myhandlers", "double")
    task_id = inline_engine.create("double", 21, retry_count=0, retain_for=None,
                                   run_at=fake_clock.now() + timedelta(seconds=10))
    assert inline_engine.run_until_idle() == 0
    fake_clock.advance(10)
    assert inline_engine.run_until_idle() == 1
    assert inline_engine.get(task_id).result == 42
    assert "taskengine-reactor" not in {t.name for t in threading.enumerate()}


def test_engine(engine):
    assert engine.execution == "processes"
    engine.register_handler("double", "myhandlers", "double")
    task_id = engine.create("double", 4)
    assert engine.wait(task_id, timeout=60).result == 8
"""

INERT = """
import sys
import threading


def test_nothing_started():
    assert "taskengine.testing.pytest_plugin" in sys.modules
    assert not [t.name for t in threading.enumerate() if t.name.startswith("taskengine")]
"""


def test_fixtures_work_in_a_fresh_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myhandlers=HANDLERS, test_uses=USES_FIXTURES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


def test_plugin_is_registered_and_inert(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inert=INERT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--trace-config")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*taskengine.testing.pytest_plugin*"])


def test_a_conftest_fixture_overrides_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.fixture
def engine():
    return "the project's own"
"""
    )
    pytester.makepyfile(
        test_override="""
def test_override(engine, inline_engine):
    assert engine == "the project's own"
    assert inline_engine.execution == "inline"
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_disabled_plugin_has_no_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off="def test_off(fake_clock):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:taskengine", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'fake_clock' not found*"])
