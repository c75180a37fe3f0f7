"""faults.md#fault-8, 9, 20: workers that cannot start (initialisers and handler modules)."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import taskengine
from taskengine.pool import supervisor
from tests.conftest import until, worker_pids
from tests.faults.conftest import (
    FAULTY,
    Recorder,
    assert_responsive,
    is_gone,
    make_engine,
    stop_and_check,
)
from tests.handlers import faulty

Status = taskengine.TaskStatus
#: First pause of the pool's start-up backoff (pool.BACKOFF_FIRST); it doubles per failure.
BACKOFF_FIRST = 0.5


def _spawn_times(markers: Path) -> list[float]:
    """When each worker ran its initialise method (marker files' modification times)."""
    return sorted(path.stat().st_mtime for path in markers.glob("init-*"))


def test_failing_initialiser_fails_the_attempt_and_a_working_one_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    """The attempt fails with WorkerInitError carrying the cause; other pools are unaffected;
    registering again with a working initialiser lets the task run."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(faulty.MARKER_DIR_ENV, str(markers))
    # The "spawn" start method, for once (forkserver is the default).
    engine = make_engine(start_method="spawn")
    try:
        engine.register_handler(
            "broken-init", FAULTY, "action", recorder, initialise_method="init_raise"
        )
        task_id = engine.create(
            "broken-init", {"action": "ok", "value": "finally"}, retry_interval=0.05
        )
        _, failed = until(lambda: recorder.first(task_id, Status.PENDING), timeout=30)
        assert failed.attempts == 1
        assert failed.retries_remaining is None
        assert failed.error is not None
        assert failed.error.type == "WorkerInitError"
        assert "init exploded" in failed.error.message
        assert failed.error.cause is not None
        assert failed.error.cause.type == "RuntimeError"
        assert failed.error.cause.message == "init exploded"
        assert failed.error.cause.traceback is not None
        assert "init_raise" in failed.error.cause.traceback

        # Another type's pool is unaffected while this one backs off.
        started = time.monotonic()
        assert_responsive(engine, "beside a broken pool")
        assert time.monotonic() - started < 10

        # A working initialiser replaces the broken one; the waiting task runs.
        engine.register_handler(
            "broken-init", FAULTY, "action", recorder, initialise_method="init_ok"
        )
        done = engine.wait(task_id, timeout=30)
        assert done.status is Status.SUCCESS
        assert done.result == "finally"
        assert done.error is None
        assert done.attempts >= 2
    finally:
        stop_and_check(engine)


def test_failing_initialiser_retries_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    """Retries apply to init failures, and the pool backs off between starts."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(faulty.MARKER_DIR_ENV, str(markers))
    engine = make_engine()  # forkserver workers get the environment of when they start
    try:
        engine.register_handler(
            "broken-init", FAULTY, "action", recorder, initialise_method="init_raise"
        )
        task_id = engine.create("broken-init", {"action": "ok"}, retry_interval=0.05)

        def failures() -> list[taskengine.BackgroundTask]:
            return [t for t in recorder.of(task_id) if t.status is Status.PENDING]

        # With backoff 0.5 s then 1 s, three failed starts take about 2 s (plus start-ups).
        until(lambda: len(failures()) >= 3, timeout=20)
        assert [t.attempts for t in failures()[:3]] == [1, 2, 3]
        assert all(t.error is not None and t.error.type == "WorkerInitError" for t in failures())
        # The task is due again 0.05 s after each failure, yet starts are spaced by the backoff.
        stamps = _spawn_times(markers)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert gaps[0] >= BACKOFF_FIRST * 0.9, gaps
        assert gaps[1] >= 2 * BACKOFF_FIRST * 0.9, gaps
        assert len([s for s in stamps if s - stamps[0] <= 3.0]) < 5, stamps
    finally:
        stop_and_check(engine)


# -- faults.md#fault-9 and #fault-20: handler modules that break at import ---------------


@pytest.fixture
def temp_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a uniquely named module on sys.path (never imported here); return its name."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(source: str) -> str:
        name = f"te_fault_mod_{uuid.uuid4().hex}"
        (folder / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        return name

    return write


def _module_path(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None
    assert spec.origin is not None
    return Path(spec.origin)


def test_module_exiting_at_import_is_a_crash_while_starting(
    eng: taskengine.TaskEngine, temp_module: Callable[[str], str]
) -> None:
    """faults.md#fault-9: os._exit at import time."""
    name = temp_module("import os\nos._exit(9)\n\ndef handle(payload):\n    return payload\n")
    eng.register_handler("exits-at-import", name, "handle")
    done = eng.wait(eng.create("exits-at-import", 1, retry_count=0), timeout=30)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "WorkerCrashedError"
    assert "code 9" in done.error.message
    assert "while starting" in done.error.message
    assert name in done.error.message
    assert_responsive(eng)


def test_module_hanging_at_import_hits_the_start_timeout(
    eng: taskengine.TaskEngine,
    temp_module: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """faults.md#fault-9: spawning a worker has its own timeout."""
    monkeypatch.setattr(supervisor, "START_TIMEOUT", 1.0)
    marker = tmp_path / "importing"
    name = temp_module(
        "import os, time\n"
        f"open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "while True:\n    time.sleep(1)\n\n"
        "def handle(payload):\n    return payload\n"
    )
    eng.register_handler("hangs-at-import", name, "handle")
    started = time.monotonic()
    done = eng.wait(eng.create("hangs-at-import", 1, retry_count=0), timeout=30)
    assert time.monotonic() - started < 1.0 + 5.0
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "WorkerInitError"
    assert "did not finish starting" in done.error.message
    pid = int(marker.read_text())
    until(lambda: is_gone(pid), timeout=5)
    assert_responsive(eng)


def test_stop_does_not_wait_for_a_worker_stuck_starting(
    temp_module: Callable[[str], str], tmp_path: Path
) -> None:
    """faults.md#fault-9: stop() never waits on an initialiser forever."""
    marker = tmp_path / "importing"
    name = temp_module(
        "import os, time\n"
        f"open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "while True:\n    time.sleep(1)\n\n"
        "def handle(payload):\n    return payload\n"
    )
    engine = make_engine()
    try:
        engine.register_handler("hangs-at-import", name, "handle")
        engine.create("hangs-at-import", 1)
        until(lambda: marker.exists() and marker.read_text(), timeout=30)
        started = time.monotonic()
        engine.stop(timeout=1)
        assert time.monotonic() - started < 5.0
        assert not worker_pids()
    finally:
        stop_and_check(engine)


def test_missing_module_is_refused_at_registration(eng: taskengine.TaskEngine) -> None:
    """faults.md#fault-20: at registration, a module that cannot be found."""
    with pytest.raises(taskengine.HandlerNotFoundError):
        eng.register_handler("nowhere", f"te_fault_missing_{uuid.uuid4().hex}", "handle")


@pytest.mark.parametrize(
    ("breakage", "cause_type", "cause_text"),
    [
        ("syntax", "SyntaxError", ""),
        ("import", "ModuleNotFoundError", "te_fault_no_such_dependency"),
        ("deleted", "ModuleNotFoundError", "te_fault_mod_"),
        ("no-method", "AttributeError", "handle"),
        ("not-callable", "TypeError", "not callable"),
    ],
)
def test_module_broken_after_registration_fails_with_worker_init_error(
    eng: taskengine.TaskEngine,
    temp_module: Callable[[str], str],
    breakage: str,
    cause_type: str,
    cause_text: str,
) -> None:
    """faults.md#fault-20: the module found at registration breaks before a worker imports it."""
    name = temp_module("def handle(payload):\n    return payload\n")
    eng.register_handler("broken-module", name, "handle")
    path = _module_path(name)
    if breakage == "syntax":
        path.write_text("def handle(payload):\n    return (\n")
    elif breakage == "import":
        path.write_text("import te_fault_no_such_dependency\n\ndef handle(p):\n    return p\n")
    elif breakage == "deleted":
        path.unlink()
    elif breakage == "no-method":
        path.write_text("def other(payload):\n    return payload\n")
    else:
        path.write_text("handle = 42\n")
    done = eng.wait(eng.create("broken-module", 1, retry_count=0), timeout=30)
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "WorkerInitError"
    assert f"{name}.handle" in done.error.message  # names the module and the method
    assert done.error.cause is not None
    assert done.error.cause.type == cause_type
    assert cause_text in done.error.cause.message
    assert_responsive(eng)
