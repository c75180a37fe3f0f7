"""The scheduler's reference and how-to keep up with the code; the how-to's test example runs."""

from __future__ import annotations

import re

import pytest

import taskengine
from tests.docs.test_docs_api import API, DOCS, _parameters, _section

HOWTO = DOCS / "howto" / "scheduling.md"


def _members() -> list[str]:
    return sorted(name for name in vars(taskengine.TaskScheduler) if not name.startswith("_"))


@pytest.mark.parametrize("name", _members())
def test_every_scheduler_method_has_a_section_naming_each_parameter(name):
    section = _section(API, f"TaskScheduler.{name}")
    member = getattr(taskengine.TaskScheduler, name)
    for parameter in _parameters(member):
        assert re.search(rf"\b{parameter}\b", section), f"`{parameter}` of {name} undocumented"


@pytest.mark.parametrize("cls", [taskengine.TaskScheduler, taskengine.ScheduledTaskTime], ids=str)
def test_every_constructor_parameter_is_documented(cls):
    section = _section(API, cls.__name__)
    for parameter in _parameters(cls):
        assert re.search(rf"\b{parameter}\b", section), f"`{parameter}` of {cls.__name__}"


def test_the_testing_example_of_the_howto_runs():
    text = HOWTO.read_text()
    block = text.split("## Testing schedules", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    prelude = (
        "from datetime import UTC, datetime\n"
        "from taskengine import ScheduledTaskTime, TaskScheduler\n"
    )
    exec(compile(prelude + block, str(HOWTO), "exec"), {})
