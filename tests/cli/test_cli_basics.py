"""The command's front door: help everywhere, exit statuses, one-line errors, store URLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskengine.cli import common

from .conftest import cli_env, run_cli, url

COMMANDS = [
    [],
    ["demo"],
    ["worker"],
    ["tasks"],
    ["tasks", "list"],
    ["tasks", "show"],
    ["tasks", "retry"],
    ["tasks", "cancel"],
    ["tasks", "remove"],
    ["tasks", "purge"],
    ["stats"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command: list[str]) -> None:
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: taskengine")
    assert "--log-level" in done.stdout


def test_module_and_console_script_agree() -> None:
    done = run_cli("--help")
    assert "demo" in done.stdout
    assert "worker" in done.stdout
    assert "stats" in done.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["nonsense"], "invalid choice"),
        (["tasks", "list", "--page-size", "many"], "invalid int value"),
        (["tasks", "list", "--store", "redis://x"], "unknown store URL 'redis://x'"),
        (["tasks", "list", "--store", "sqlite://relative.db"], "bad store URL"),
        (["--log-level", "loud", "stats"], "unknown log level 'loud'"),
        (["worker", "no_colon_here"], "APP must look like package.module:function"),
        (["tasks", "purge", "--store", "memory:"], "pass --yes"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_page_size_is_a_usage_error_naming_the_argument() -> None:
    done = run_cli("tasks", "list", "--store", "memory:", "--page-size", "0")
    assert done.returncode == 2
    assert "page_size" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_missing_sqlite_file_is_a_failure_not_a_new_database(tmp_path: Path) -> None:
    done = run_cli("stats", "--store", url(tmp_path / "absent.db"))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"taskengine: no task store at {tmp_path / 'absent.db'} (check --store or "
        "$TASKENGINE_STORE)"
    )
    assert not (tmp_path / "absent.db").exists()


def test_store_comes_from_the_environment_then_the_default(tmp_path: Path) -> None:
    done = run_cli("stats", "--json", env=cli_env(TASKENGINE_STORE="memory:"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["pending"] == 0
    # Without either, ./taskengine.db in the current directory (missing here: a failure).
    done = run_cli("stats", cwd=tmp_path)
    assert done.returncode == 1
    assert str(tmp_path / "taskengine.db") in done.stderr


def test_postgres_url_constructs_postgres_store_and_reports_its_error_cleanly() -> None:
    secret = "postgresql://user:hunter2@127.0.0.1:1/nowhere"
    done = run_cli("stats", "--store", secret)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("taskengine: ")
    assert "PostgreSQL" in lines[0] or "Postgres" in lines[0]
    assert "hunter2" not in done.stderr  # the DSN (its password) is never echoed
    debug = run_cli("--debug", "stats", "--store", secret)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_store_url_parsing_in_process(tmp_path: Path) -> None:
    assert common.store_url(None, {}) == "sqlite:///taskengine.db"
    assert common.store_url(None, {"TASKENGINE_STORE": "memory:"}) == "memory:"
    assert common.store_url("memory:", {"TASKENGINE_STORE": "x"}) == "memory:"
    store = common.open_store(f"sqlite:///{tmp_path}/a.db")
    assert store.path == f"{tmp_path}/a.db"  # type: ignore[attr-defined]
    with pytest.raises(common.CliError) as caught:
        common.open_store("sqlite:///")
    assert caught.value.code == 2


def test_store_errors_never_show_the_url_or_its_password() -> None:
    url = "postgresql://user:hunter2@db.example/tasks"
    message = f"could not connect to {url} (password hunter2 rejected)"
    assert common.scrub(message, url) == "could not connect to *** (password *** rejected)"
    assert common.scrub("plain", "memory:") == "plain"


def test_an_unreadable_sqlite_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    done = run_cli("tasks", "list", "--store", url(bad))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("taskengine: cannot open the store: ")
