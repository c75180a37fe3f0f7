"""Helpers of the CLI tests: run the real ``taskengine`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import taskengine

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TASKENGINE_STORE"}
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``python -m taskengine ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "taskengine", *args],
        cwd=cwd or ROOT,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite task store file path (not created)."""
    return tmp_path / "tasks.db"


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def engine_on(path: Path) -> taskengine.TaskEngine:
    """An engine that is never started, to arrange and check tasks in the test process."""
    return taskengine.TaskEngine(taskengine.SqliteStore(path))
