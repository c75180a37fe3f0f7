"""Log records carry structured fields, the CLI prints them, the library adds no handler."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import taskengine
from taskengine.cli import logs
from taskengine.core import codec, transitions

from ..contract.factories import T0


def test_importing_and_using_the_library_configures_no_handler() -> None:
    code = (
        "import logging, taskengine\n"
        "e = taskengine.TaskEngine(); e.start(); e.stop()\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert all(not logging.getLogger(n).handlers for n in logging.root.manager.loggerDict)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_recovered_attempts_are_logged_with_task_type_and_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = taskengine.SqliteStore(tmp_path / "t.db")
    task = transitions.new_task(
        task_id="0" * 31 + "1",
        task_type="alpha",
        payload_blob=codec.encode(None),
        now=T0,
        retry_count=None,
        retry_interval=1.0,
        retain_for=None,
        run_at=None,
        idempotency_key=None,
    )
    store.open()
    store.insert_many([transitions.claim(task, T0, "old-node")])
    store.close()
    with caplog.at_level(logging.INFO, logger="taskengine"):
        engine = taskengine.TaskEngine(store, node_identity="new-node").start()
        engine.stop()
    [record] = [r for r in caplog.records if getattr(r, "task_id", None) == task.id]
    assert record.name == "taskengine.coordinator.engine"
    assert (record.task_type, record.node) == ("alpha", "new-node")  # type: ignore[attr-defined]


def test_formatter_appends_the_structured_fields() -> None:
    formatter = logs.StructuredFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("taskengine.x", logging.WARNING, __file__, 1, "hello", None, None)
    record.task_id, record.task_type, record.node = "abc", "alpha", "n1"
    assert formatter.format(record) == (
        "WARNING taskengine.x: hello [task_id=abc task_type=alpha node=n1]"
    )
    plain = logging.LogRecord("taskengine.x", logging.INFO, __file__, 1, "plain", None, None)
    assert formatter.format(plain) == "INFO taskengine.x: plain"
    assert logs.parse_level("info") == logging.INFO
    assert logs.parse_level("loud") is None
