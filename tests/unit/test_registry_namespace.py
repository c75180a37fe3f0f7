"""Handler modules inside nested namespace packages (no ``__init__.py``) are found."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import taskengine


def test_a_module_in_nested_namespace_packages_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "nsapp" / "workers").mkdir(parents=True)
    (tmp_path / "nsapp" / "workers" / "jobs.py").write_text("def run(payload):\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    engine = taskengine.TaskEngine()
    try:
        engine.register_handler("job", "nsapp.workers.jobs", "run")
        with pytest.raises(taskengine.HandlerNotFoundError, match=r"nsapp\.workers\.missing"):
            engine.register_handler("job", "nsapp.workers.missing", "run")
        with pytest.raises(taskengine.HandlerNotFoundError, match=r"nsapp\.nowhere\.jobs"):
            engine.register_handler("job", "nsapp.nowhere.jobs", "run")
    finally:
        engine.stop()
    assert "nsapp" not in sys.modules  # found without importing anything
