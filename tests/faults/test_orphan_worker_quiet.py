"""A worker whose coordinator died exits quietly: at most one line on stderr, no traceback.

``orphan_worker_driver.py`` runs in a subprocess whose stderr goes to a file: as a real
coordinator that the test SIGKILLs (its forkserver workers inherit that stderr), or as a worker
that meets its coordinator's closed pipe itself, before its lifeline watchdog does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import until
from tests.faults.conftest import is_gone

DRIVER = Path(__file__).with_name("orphan_worker_driver.py")
ROOT = Path(__file__).resolve().parents[2]
#: Exit status of a worker that found its coordinator gone (``worker_main.ORPHAN_EXIT_CODE``).
ORPHAN_EXIT_CODE = 70


class Run:
    """One run of the driver, its stderr in ``workdir/stderr``."""

    def __init__(self, mode: str, workdir: Path) -> None:
        self.stderr_path = workdir / "stderr"
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(DRIVER), mode, str(workdir)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.groups: set[int] = {self.proc.pid}

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def cleanup(self) -> None:
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[type[Run]]:
    started: list[Run] = []

    class Tracked(Run):
        def __init__(self, mode: str, workdir: Path) -> None:
            super().__init__(mode, workdir)
            started.append(self)

    yield Tracked
    for each in started:
        each.cleanup()


def assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception in thread" not in stderr, stderr
    assert len(stderr.splitlines()) <= 1, stderr


def test_a_worker_outliving_a_killed_coordinator_exits_without_a_traceback(
    driver: type[Run], tmp_path: Path
) -> None:
    run = driver("engine", tmp_path)
    pid_file = tmp_path / "worker.pid"

    def worker_pid() -> int | None:
        assert run.proc.poll() is None, run.stderr()
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(pid_file.read_text())
        return None

    pid = until(worker_pid, timeout=60)
    run.groups.add(pid)  # the worker leads its own process group
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(timeout=10)
    # The handler may finish now and try to report to the dead coordinator.
    (tmp_path / "release").touch()
    until(lambda: is_gone(pid), timeout=10)
    assert_quiet(run.stderr())


@pytest.mark.parametrize("mode", ["gone-at-start", "gone-at-init-failure"])
def test_a_worker_that_cannot_say_it_started_exits_quietly(
    driver: type[Run], tmp_path: Path, mode: str
) -> None:
    run = driver(mode, tmp_path)
    assert run.proc.wait(timeout=60) == ORPHAN_EXIT_CODE, run.stderr()
    stderr = run.stderr()
    assert_quiet(stderr)
    assert "coordinator is gone" in stderr


def test_a_handler_reporting_progress_after_the_coordinator_left_finishes_quietly(
    driver: type[Run], tmp_path: Path
) -> None:
    run = driver("gone-mid-attempt", tmp_path)
    code = run.proc.wait(timeout=60)
    stderr = run.stderr()
    assert code in (0, ORPHAN_EXIT_CODE), stderr
    assert_quiet(stderr)


def test_forked_workers_exit_when_their_coordinator_is_killed(
    driver: type[Run], tmp_path: Path
) -> None:
    """With the fork start method a worker inherits the coordinator's memory, descriptors
    included: it must close the coordinator's ends of its own and earlier workers' pipes, or
    it never sees its coordinator go."""
    run = driver("engine-fork", tmp_path)

    def pids() -> tuple[int, int] | None:
        assert run.proc.poll() is None, run.stderr()
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((tmp_path / "worker-1.pid").read_text()), int(
                (tmp_path / "worker.pid").read_text()
            )
        return None

    first, second = until(pids, timeout=60)
    run.groups.update((first, second))
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(timeout=10)
    until(lambda: is_gone(first) and is_gone(second), timeout=10)
