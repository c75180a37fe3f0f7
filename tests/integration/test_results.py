"""What handlers see and return: current_task(), progress, async handlers, result round trips."""

from __future__ import annotations

import decimal
import hashlib
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import taskengine
from taskengine import TaskStatus
from tests.conftest import until

from .support import Gate, present

PROBES = "tests.handlers.probes"
BASIC = "tests.handlers.basic"
TEN_MB = 10 * 1024 * 1024


def test_current_task_gives_id_type_and_an_attempt_that_grows_with_retries(
    memory_engine: taskengine.TaskEngine, tmp_path: Path
) -> None:
    memory_engine.register_handler("ctx", PROBES, "attempt_log")
    log = tmp_path / "attempts.log"
    task_id = memory_engine.create("ctx", {"log": str(log), "fails": 2}, retry_interval=0)
    final = memory_engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.result["id"] == task_id
    assert final.result["type"] == "ctx"
    assert final.result["attempt"] == 3
    assert final.attempts == 3
    assert final.error is None  # cleared on success
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["1", "2", "3"]


def test_basic_context_info_handler(memory_engine: taskengine.TaskEngine) -> None:
    memory_engine.register_handler("info", BASIC, "context_info")
    task_id = memory_engine.create("info")
    result = memory_engine.wait(task_id, timeout=20).result
    assert result == {"id": task_id, "type": "info", "attempt": 1}


def test_report_progress_is_visible_through_get_while_running(
    memory_engine: taskengine.TaskEngine, make_gate: Callable[[str], Gate]
) -> None:
    memory_engine.register_handler("prog", PROBES, "progress_then_gate")
    gate = make_gate("progress")
    task_id = memory_engine.create("prog", gate.payload(fraction=0.25))
    gate.wait_started()
    running = present(until(lambda: _with_progress(memory_engine, task_id), timeout=10))
    assert running.status is TaskStatus.PROCESSING
    assert running.progress == 0.25
    gate.open()
    final = memory_engine.wait(task_id, timeout=20)
    assert final.status is TaskStatus.SUCCESS
    assert final.result == 0.25


def _with_progress(engine: taskengine.TaskEngine, task_id: str) -> taskengine.BackgroundTask | None:
    task = engine.get(task_id)
    return task if task is not None and task.progress is not None else None


def test_basic_progress_handler(memory_engine: taskengine.TaskEngine) -> None:
    memory_engine.register_handler("prog", BASIC, "progress")
    task_id = memory_engine.create("prog", retain_for=None)
    final = memory_engine.wait(task_id, timeout=20)
    assert final.result == task_id
    # The report travels before the result on the same pipe, so it is stored first.
    assert present(memory_engine.get(task_id)).progress == 0.5


def test_async_def_handlers(memory_engine: taskengine.TaskEngine) -> None:
    memory_engine.register_handler("aecho", BASIC, "async_echo")
    memory_engine.register_handler("actx", PROBES, "async_context")
    memory_engine.register_handler("afail", PROBES, "async_fail")
    assert memory_engine.wait(memory_engine.create("aecho", [1, 2]), 20).result == {"async": [1, 2]}
    actx = memory_engine.create("actx", {"numbers": [1, 2, 3]})
    assert memory_engine.wait(actx, timeout=20).result == {
        "id": actx,
        "attempt": 1,
        "squares": [1, 4, 9],
    }
    failed = memory_engine.wait(memory_engine.create("afail", "x", retry_count=0), 20)
    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None
    assert failed.error.type == "KeyError"
    assert "async failure 'x'" in failed.error.message
    assert failed.error.traceback is not None
    assert "async_fail" in failed.error.traceback
    # The same worker runs several async tasks in a row (one event loop, reused).
    again = [memory_engine.create("aecho", n) for n in range(3)]
    assert [memory_engine.wait(t, timeout=20).result for t in again] == [
        {"async": n} for n in range(3)
    ]


ROUND_TRIP: list[Any] = [
    b"\x00\xffbytes",
    bytearray(b"mutable"),
    {"a": [1, {"b": (2, 3)}], "c": {"d": None, "e": {"f": {"g": [True, False]}}}},
    None,
    "ünïcødé ✓",
    -(2**100),
    1.5,
    math.inf,
    {1, 2, 3},
    frozenset({"x"}),
    (1, (2, (3,))),
    decimal.Decimal("1.10"),
    datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
    timedelta(days=1, microseconds=1),
    [],
    {},
]


def test_payloads_and_results_of_many_types_round_trip(
    memory_engine: taskengine.TaskEngine,
) -> None:
    memory_engine.register_handler("echo", BASIC, "echo")
    ids = [memory_engine.create("echo", value) for value in ROUND_TRIP]
    for value, task_id in zip(ROUND_TRIP, ids, strict=True):
        result = memory_engine.wait(task_id, timeout=20).result
        assert result == value
        assert type(result) is type(value)


def test_nan_result_round_trips(memory_engine: taskengine.TaskEngine) -> None:
    memory_engine.register_handler("echo", BASIC, "echo")
    assert math.isnan(memory_engine.wait(memory_engine.create("echo", math.nan), 20).result)


def test_large_payload_and_results_round_trip(memory_engine: taskengine.TaskEngine) -> None:
    memory_engine.register_handler("echo", BASIC, "echo")
    memory_engine.register_handler("make", PROBES, "make")
    big = bytes(range(256)) * (TEN_MB // 256)
    echoed = memory_engine.wait(memory_engine.create("echo", big), timeout=30).result
    assert len(echoed) == TEN_MB
    assert echoed == big
    made = memory_engine.wait(
        memory_engine.create("make", {"kind": "large", "size": TEN_MB}), timeout=30
    ).result
    assert len(made) == TEN_MB
    assert made == hashlib.sha256(b"seed").digest() * (TEN_MB // 32)
    none = memory_engine.wait(memory_engine.create("make", {"kind": "none"}), timeout=20)
    assert none.status is TaskStatus.SUCCESS
    assert none.result is None
    assert none.result_blob is not None  # a stored None, not a missing result
