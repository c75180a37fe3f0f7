"""Workers whose coordinator is gone, for ``test_orphan_worker_quiet.py``.

Usage: ``python orphan_worker_driver.py MODE WORKDIR`` with the repository root on PYTHONPATH;
the test reads this process's stderr from a file.

Modes:

* ``engine-fork``: the same with the fork start method and a second worker (of another type)
  forked while the first runs; the first's pid moves to ``WORKDIR/worker-1.pid``.
* ``engine``: a real coordinator.  It starts an engine on ``WORKDIR/tasks.db`` with one worker
  for "sleepy" (``sleep_and_report``) and creates one task; the handler writes its pid to
  ``WORKDIR/worker.pid`` and runs until ``WORKDIR/release`` exists, reporting progress.  The
  test SIGKILLs this process meanwhile.
* ``gone-at-start``, ``gone-at-init-failure``, ``gone-mid-attempt``: this process *is* the
  worker (``run_worker`` in the main thread) and plays the coordinator from a thread.  It holds
  the lifeline open throughout, as a coordinator that has just died does until the worker's
  watchdog thread gets to run, so the worker meets the closed pipe itself: when it sends
  ``Ready``, when it sends ``InitFailed``, or when its handler reports progress from a thread
  and then returns its result.

Workers use the forkserver start method, which imports this file again as ``__mp_main__``:
everything runs under the ``__main__`` guard.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import taskengine
from taskengine.core import codec
from taskengine.pool import messages, worker_main

MODULE = "tests.faults.orphan_worker_driver"
_KEPT: list[Connection] = []


def _wait_for(path: Path, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {limit}s")
        time.sleep(0.01)


def sleep_and_report(payload: dict[str, Any]) -> str:
    """Handler: write the pid, then report progress until the release file appears."""
    task = taskengine.current_task()
    workdir = Path(payload["dir"])
    (workdir / "worker.pid.tmp").write_text(str(os.getpid()))
    os.replace(workdir / "worker.pid.tmp", workdir / "worker.pid")
    deadline = time.monotonic() + 30.0
    while not (workdir / "release").exists() and time.monotonic() < deadline:
        task.report_progress(0.5, "sleeping")
        time.sleep(0.05)
    return "done"


def progress_after_close(payload: dict[str, Any]) -> str:
    """Handler: once the coordinator's end is closed, report progress from a thread, return."""
    workdir = Path(payload["dir"])
    (workdir / "started").touch()
    _wait_for(workdir / "closed")
    task = taskengine.current_task()  # context variables do not follow into a new thread
    reporter = threading.Thread(target=task.report_progress, args=(0.9, "almost"))
    reporter.start()
    reporter.join()
    return "finished after the coordinator left"


def _config(module: str) -> worker_main.WorkerConfig:
    return worker_main.WorkerConfig(
        task_type="orphan",
        module=module,
        method="progress_after_close",
        initialise_method=None,
        shutdown_method=None,
        sys_path=tuple(sys.path),
        environ=tuple(os.environ.items()),
    )


def _coordinator_mid_attempt(conn: Connection, workdir: Path) -> None:
    """Take Ready, send one attempt, and close the pipe while it runs."""
    messages.receive_to_coordinator(conn)
    blob = codec.encode({"dir": str(workdir)})
    messages.send(conn, messages.Run("t-1", "orphan", 1, blob, 1))
    _wait_for(workdir / "started")
    conn.close()
    (workdir / "closed").touch()


def run_engine(workdir: Path, start_method: str | None = None) -> None:
    engine = taskengine.TaskEngine(
        taskengine.SqliteStore(workdir / "tasks.db"), start_method=start_method
    )
    engine.start()
    engine.register_handler("sleepy", MODULE, "sleep_and_report", max_worker_count=1)
    engine.create("sleepy", {"dir": str(workdir)}, retain_for=None)
    if start_method == "fork":
        # A second worker, forked after the first: it must not hold the first one's pipes.
        _wait_for(workdir / "worker.pid")
        os.replace(workdir / "worker.pid", workdir / "worker-1.pid")
        engine.register_handler("sleepy2", MODULE, "sleep_and_report", max_worker_count=1)
        engine.create("sleepy2", {"dir": str(workdir)}, retain_for=None)
    threading.Event().wait()  # until the test kills this process


def run_as_worker(mode: str, workdir: Path) -> None:
    coordinator_end, worker_end = Pipe(duplex=True)
    lifeline_reader, lifeline_writer = Pipe(duplex=False)
    module = MODULE
    if mode in ("gone-at-start", "gone-at-init-failure"):
        coordinator_end.close()
        if mode == "gone-at-init-failure":
            module = "tests.faults.no_such_handler_module"
    elif mode == "gone-mid-attempt":
        threading.Thread(
            target=_coordinator_mid_attempt, args=(coordinator_end, workdir), daemon=True
        ).start()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    # Kept open until the process ends: closing it first would let the watchdog exit.
    _KEPT.append(lifeline_writer)
    worker_main.run_worker(worker_end, lifeline_reader, _config(module))


if __name__ == "__main__":
    if sys.argv[1] == "engine":
        run_engine(Path(sys.argv[2]))
    elif sys.argv[1] == "engine-fork":
        run_engine(Path(sys.argv[2]), "fork")
    else:
        run_as_worker(sys.argv[1], Path(sys.argv[2]))
