"""``taskengine tasks ...`` and ``stats`` on a SQLite file, run as real subprocesses.

The tasks are arranged in the test process with an engine that is never started (no workers);
the statuses the commands act on are reached through the public API only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import taskengine

from .conftest import ROOT, cli_env, engine_on, run_cli, url


def _arrange(db: Path) -> dict[str, list[str]]:
    engine = engine_on(db)
    try:
        pending = engine.create_many("alpha", [1, 2, 3], retain_for=None)
        beta = engine.create_many("beta", [10, 20], retain_for=None)
        cancelled = beta[0]
        assert engine.cancel(cancelled)
    finally:
        engine.stop()
    return {"pending": pending, "beta": beta, "cancelled": [cancelled]}


def test_list_json_is_the_twin_form_and_pages_with_the_cursor(db: Path) -> None:
    ids = _arrange(db)
    first = run_cli("tasks", "list", "--store", url(db), "--json", "--page-size", "2")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert [t["id"] for t in page["entities"]] == ids["pending"][:2]
    task = taskengine.BackgroundTask.from_json(page["entities"][0])
    assert (task.type, task.status, task.payload) == ("alpha", "pending", 1)
    second = run_cli(
        "tasks",
        "list",
        "--store",
        url(db),
        "--json",
        "--page-size",
        "2",
        "--cursor",
        page["cursor"],
    )
    rest = json.loads(second.stdout)
    assert [t["id"] for t in rest["entities"]] == [ids["pending"][2], ids["beta"][0]]


def test_list_filters_sorts_and_follows_every_page(db: Path) -> None:
    ids = _arrange(db)
    done = run_cli(
        "tasks", "list", "--store", url(db), "--json", "--type", "alpha", "--direction", "desc",
        "--page-size", "1", "--all",
    )  # fmt: skip
    got = json.loads(done.stdout)
    assert [t["id"] for t in got["entities"]] == ids["pending"][::-1]
    assert got["cursor"] is None
    cancelled = run_cli("tasks", "list", "--store", url(db), "--status", "cancelled")
    assert cancelled.returncode == 0
    assert ids["cancelled"][0] in cancelled.stdout
    assert ids["pending"][0] not in cancelled.stdout
    assert "1 task(s)" in cancelled.stdout


def test_a_cursor_of_another_listing_is_a_usage_error(db: Path) -> None:
    _arrange(db)
    page = json.loads(
        run_cli("tasks", "list", "--store", url(db), "--json", "--page-size", "1").stdout
    )
    done = run_cli(
        "tasks", "list", "--store", url(db), "--status", "pending", "--cursor", page["cursor"]
    )
    assert done.returncode == 2
    assert "cursor" in done.stderr
    assert "Traceback" not in done.stderr


def test_show_prints_every_field_or_fails_for_an_unknown_id(db: Path) -> None:
    ids = _arrange(db)
    done = run_cli("tasks", "show", ids["pending"][1], "--store", url(db), "--json")
    assert json.loads(done.stdout)["payload"] == 2
    table = run_cli("tasks", "show", ids["pending"][1], "--store", url(db))
    assert "retryInterval" in table.stdout
    assert "pending" in table.stdout
    missing = run_cli("tasks", "show", "0" * 32, "--store", url(db))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"taskengine: no task with id {'0' * 32}"


def test_cancel_retry_remove_act_and_report_what_they_did(db: Path) -> None:
    ids = _arrange(db)
    first, second, third = ids["pending"]
    done = run_cli("tasks", "cancel", first, second, "--store", url(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{first}: cancelled", f"{second}: cancelled"]
    again = run_cli("tasks", "cancel", first, "--store", url(db))
    assert again.returncode == 1
    assert again.stdout.strip() == f"{first}: not cancelled (status cancelled)"
    retry = run_cli("tasks", "retry", third, "--store", url(db), "--json")
    assert retry.returncode == 0
    assert json.loads(retry.stdout)[0]["changed"] is True
    removed = run_cli("tasks", "remove", first, "0" * 32, "--store", url(db))
    assert removed.returncode == 1  # one of the two ids is unknown
    assert removed.stdout.splitlines() == [
        f"{first}: removed",
        f"{'0' * 32}: not removed (no such task)",
    ]
    engine = engine_on(db)
    try:
        assert engine.get(first) is None
        status = engine.get(second)
        assert status is not None
        assert status.status is taskengine.TaskStatus.CANCELLED
    finally:
        engine.stop()


def test_purge_deletes_only_finished_tasks_matching_the_filters(db: Path) -> None:
    ids = _arrange(db)
    engine = engine_on(db)
    try:
        assert engine.cancel(ids["pending"][0])
    finally:
        engine.stop()
    dry = run_cli("tasks", "purge", "--dry-run", "--store", url(db))
    assert dry.stdout.strip() == (
        "would delete 2 success/failed/cancelled tasks (dry run: nothing deleted)"
    )
    typed = run_cli("tasks", "purge", "--yes", "--type", "beta", "--store", url(db))
    assert typed.stdout.strip() == (
        "deleted 1 of 1 matching success/failed/cancelled tasks of type 'beta'"
    )
    young = run_cli("tasks", "purge", "--yes", "--older-than", "3600", "--store", url(db), "--json")
    assert json.loads(young.stdout) == {"matched": 0, "deleted": 0, "dryRun": False}
    rest = json.loads(run_cli("tasks", "list", "--store", url(db), "--json", "--all").stdout)
    statuses = sorted(t["status"] for t in rest["entities"])
    assert statuses == ["cancelled", "pending", "pending", "pending"]


def test_stats_counts_per_type_and_status(db: Path) -> None:
    _arrange(db)
    done = run_cli("stats", "--store", url(db), "--json")
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["totals"] == {
        "pending": 4, "processing": 0, "success": 0, "failed": 0, "cancelled": 1,
    }  # fmt: skip
    by_type = {entry["type"]: entry for entry in snapshot["types"]}
    assert (by_type["alpha"]["pending"], by_type["beta"]["cancelled"]) == (3, 1)
    assert snapshot["isDispatching"] is False
    assert snapshot["oldestPendingAge"] >= 0
    table = run_cli("stats", "--store", url(db))
    assert "alpha" in table.stdout
    assert "(all)" in table.stdout


def test_a_closed_pipe_ends_the_listing_quietly(db: Path) -> None:
    engine = engine_on(db)
    try:
        engine.create_many("alpha", list(range(300)), retain_for=None)
    finally:
        engine.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskengine", "tasks", "list", "--all", "--json",
         "--store", url(db)],
        cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.read(10) == b'{\n  "entit'
    proc.stdout.close()  # like `| head`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1)
    assert err == b""
