"""The benchmark scripts run in quick mode and print the JSON the results and README rely on.

No timing is asserted (performance is measured by ``make bench``, never by tests): this only
keeps the scripts from rotting as the engine changes.  One quick run of the whole suite
(``benchmarks.run_all --quick``) runs every script in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskengine.stores.sqlite import schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = run_module(
        [
            "benchmarks.run_all",
            "--quick",
            "--out",
            str(out),
            "--only",
            "overhead",
            "cpu_scaling",
            "latency",
            "latency_breakdown",
            "cold_start",
            "table_scale",
            "memory",
            "large_payload",
        ],
        timeout=600,
    )
    return json.loads(proc.stdout), out


@pytest.fixture(scope="module")
def user_run() -> dict[str, Any]:
    """The suites of the paths users take, in a run of their own (each run stays well inside
    the per-test faulthandler timeout on a loaded 2-core machine)."""
    proc = run_module(
        ["benchmarks.run_all", "--quick", "--only", "user_paths", "fairness"], timeout=600
    )
    return json.loads(proc.stdout)


def run_module(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ARGS`` from the repository root; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def numbers(mapping: dict[str, Any]) -> list[float]:
    return list(mapping.values())


def positive(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and v > 0 for v in values)


def test_machine_facts_and_files(run: tuple[dict[str, Any], Path]) -> None:
    results, out = run
    machine = results["machine"]
    for key in ("cpu_model", "logical_cores", "python", "date_utc", "load_average"):
        assert machine[key], key
    assert results["quick"] is True
    assert json.loads((out / "latest.json").read_text()) == results
    summary = (out / "summary.md").read_text()
    assert machine["cpu_model"] in summary
    assert "| target |" in summary


def test_overhead_shape(run: tuple[dict[str, Any], Path]) -> None:
    overhead = run[0]["suites"]["overhead"]
    contenders = {
        "taskengine_memory",
        "taskengine_sqlite",
        "taskengine_sqlite_normal",
        "process_pool_executor",
        "multiprocessing_pool",
        "loky",
        "huey_sqlite",
    }
    assert set(overhead["tasks_per_second_median"]) == contenders
    assert set(overhead["us_per_task_median"]) == contenders
    assert positive(numbers(overhead["tasks_per_second_median"]))
    assert set(overhead["ratios"]) == {
        "memory_vs_process_pool_executor",
        "sqlite_vs_memory",
        "sqlite_normal_vs_memory",
        "sqlite_vs_huey_sqlite",
    }
    assert positive(numbers(overhead["ratios"]))
    assert len(overhead["huey_lost_tasks_per_round"]) == overhead["rounds"]


def test_cpu_latency_cold_start_shape(run: tuple[dict[str, Any], Path]) -> None:
    suites = run[0]["suites"]
    cpu = suites["cpu_scaling"]
    assert set(cpu["speedup"]) == {"taskengine_memory", "process_pool_executor"}
    # Every count asked for is either measured (with both no-op paths) or skipped with a note.
    assert set(cpu["by_workers"]) == {str(w) for w in cpu["worker_counts"]} == {"2", "4", "8", "16"}
    for count, figures in cpu["by_workers"].items():
        if "skipped" in figures:
            assert int(count) > cpu["cores"]
            assert f"{count} workers on {cpu['cores']} cores" in figures["skipped"]
            continue
        assert positive(numbers(figures["speedup"])), count
        assert set(figures["noop_tasks_per_second_median"]) == {
            "noop_create_many",
            "noop_create_loop",
        }
        assert positive(numbers(figures["noop_tasks_per_second_median"])), count
    assert cpu["by_workers"][str(cpu["workers"])]["speedup"] == cpu["speedup"]
    assert positive(numbers(cpu["speedup"]))
    assert cpu["speedup_limit"] >= 1
    assert set(cpu["worker_utilisation"]) == set(cpu["speedup"])
    # Busy seconds over workers x wall: a share (the slack covers timer granularity).
    assert all(0 < share <= 1.05 for share in cpu["worker_utilisation"].values())
    for name, shares in cpu["samples_worker_utilisation"].items():
        assert len(shares) == cpu["rounds"], name
    # The ceiling is the speed-up at full utilisation: speed-up = ceiling x utilisation.
    for name, ceiling in cpu["speedup_ceiling_at_full_utilisation"].items():
        utilisation = cpu["worker_utilisation"][name]
        assert cpu["parallel_task_slowdown"][name] > 0
        assert ceiling * utilisation == pytest.approx(cpu["speedup"][name], rel=0.1), name
    latency = suites["latency"]
    for figure in ("p50_us_median", "p99_us_median"):
        assert positive(numbers(latency[figure]))
        assert latency[figure]["taskengine_memory"] <= latency["p99_us_median"]["taskengine_memory"]
    assert positive(numbers(latency["ratios"]))
    assert positive(numbers(latency["coordinator_cpu_us_per_trip_median"]))
    cold = suites["cold_start"]
    assert set(cold["ms_median"]) == {
        "taskengine_memory",
        "taskengine_sqlite",
        "process_pool_executor",
    }
    assert positive(numbers(cold["ms_median"]))


def test_table_scale_and_memory_shape(run: tuple[dict[str, Any], Path]) -> None:
    suites = run[0]["suites"]
    scale = suites["table_scale"]
    for part in ("small", "large"):
        figures = scale[part]
        for key in ("get", "query_first_page", "query_deep_page", "claim_due_8", "next_due"):
            assert positive([figures[key]["median_us"], figures[key]["p99_us"]]), key
        assert figures["create_tasks_per_second"] > 0
        assert figures["rss_mib"]["final"] > 0
    assert scale["large"]["tasks"] > scale["small"]["tasks"]
    assert positive(numbers(scale["ratios_large_vs_small"]))
    memory = suites["memory"]["rss_mib_median"]
    for name in ("taskengine_memory", "taskengine_sqlite", "process_pool_executor"):
        for phase in ("idle", "after"):
            assert positive([memory[name][phase]["coordinator"], memory[name][phase]["worker"]])


def test_every_target_is_evaluated(
    run: tuple[dict[str, Any], Path], user_run: dict[str, Any]
) -> None:
    results = run[0]
    # Both runs evaluate the same list of targets, each measuring its own suites' rows.
    rows = [
        batch if batch["measured"] is not None else user
        for batch, user in zip(results["targets"], user_run["targets"], strict=True)
    ]
    assert len(rows) >= 25
    for row in rows:
        if "16 workers" in row["target"] and results["machine"]["logical_cores"] < 16:
            # Not measurable here: the 16-worker count is skipped on a smaller machine.
            assert row["measured"] is None, row
            assert row["met"] is None, row
            continue
        assert isinstance(row["measured"], int | float), row
        assert row["met"] in (True, False), row
    # The paths users take come first in the table.
    assert rows[0]["target"].startswith("user path")


def test_user_paths_shape(user_run: dict[str, Any]) -> None:
    user = user_run["suites"]["user_paths"]
    memory = user["single_create_memory"]
    peers = {"taskengine_memory", "multiprocessing_pool", "process_pool_executor"}
    assert set(memory["tasks_per_second_median"]) == set(memory["paths"]) == peers
    assert "create loop" in memory["paths"]["taskengine_memory"]
    assert positive(numbers(memory["tasks_per_second_median"]))
    assert positive(numbers(memory["ratios"]))
    sqlite = user["single_create_sqlite"]
    assert sqlite["synchronous"] == "full"
    assert set(sqlite["enqueue_per_second_median"]) == {
        "taskengine_sqlite_no_handler",
        "taskengine_sqlite_consuming",
        "taskengine_sqlite_4_threads",
        "huey_sqlite_no_consumer",
        "huey_sqlite_consuming",
    }
    assert set(sqlite["end_to_end_tasks_per_second_median"]) == {
        "taskengine_sqlite_consuming",
        "huey_sqlite_consuming",
    }
    assert positive(numbers(sqlite["enqueue_per_second_median"]))
    assert positive(numbers(sqlite["ratios"]))
    assert sqlite["fsync_4k_p50_us"] > 0
    assert len(sqlite["huey_lost_tasks_per_round"]) == user["rounds"]
    trip = user["round_trip"]
    for figure in ("p50_us_median", "p99_us_median"):
        assert set(trip[figure]) == {
            "taskengine_memory",
            "taskengine_sqlite",
            "process_pool_executor",
        }
        assert positive(numbers(trip[figure]))
    assert set(trip["ratios"]) == {"memory_p50_vs_ppe_p50", "sqlite_p50_vs_ppe_p50"}
    # Every section keeps one sample per round and contender.
    for section in ("single_create_memory", "single_create_sqlite", "round_trip"):
        for name, runs in user[section]["samples"].items():
            assert len(runs) == user["rounds"], (section, name)


def test_fairness_shape(user_run: dict[str, Any]) -> None:
    fairness = user_run["suites"]["fairness"]
    heavy = fairness["warm_then_heavy"]
    engine = {
        f"taskengine_{store}_{path}"
        for store in ("memory", "sqlite")
        for path in ("create_many", "create_loop")
    }
    parallel = engine | {"process_pool_executor", "multiprocessing_pool", "loky"}
    assert set(heavy["speedup"]) == parallel
    assert positive(numbers(heavy["speedup"]))
    assert set(fairness["paths"]) == parallel | {"serial"}
    for name in parallel:
        share = heavy["max_share_worst_round"][name]
        assert 1 / fairness["workers"] <= share <= 1, name
        for counts in heavy["tasks_per_worker_per_round"][name]:
            # One entry per worker that ran a task of the batch, the whole batch in all.
            assert sum(counts) == heavy["tasks"], name
            assert len(counts) <= fairness["workers"], name
    assert set(fairness["mixed_durations"]) == {"bimodal", "one_long"}
    for mix in fairness["mixed_durations"].values():
        assert set(mix["makespan_seconds_median"]) == parallel | {"serial"}
        assert positive(numbers(mix["makespan_seconds_median"]))
        assert set(mix["makespan_vs_ppe"]) == set(mix["makespan_vs_lower_bound"]) == parallel
        assert mix["lower_bound_seconds"] >= mix["longest_task_seconds"] > 0


def test_device_scaling_script_parses() -> None:
    script = ROOT / "benchmarks" / "device_scaling.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_latency_breakdown_shape(run: tuple[dict[str, Any], Path]) -> None:
    breakdown = run[0]["suites"]["latency_breakdown"]
    assert breakdown["all_steps_instrumented"] is True, "an instrumented method was renamed"
    steps = breakdown["median_us"]
    assert steps["total"] > 0
    assert all(isinstance(v, int | float) for v in steps.values()), steps
    assert 0 <= breakdown["share_dispatched_on_creating_thread"] <= 1


def test_sqlite_cost_reports_every_step_and_every_index() -> None:
    proc = run_module(["benchmarks.sqlite_cost", "--quick"], timeout=300)
    result = json.loads(proc.stdout)
    steps = {"insert", "claim", "finish_delete", "commit", "total"}
    for key in ("us_per_task_full_schema", "us_per_task_without_any_index"):
        assert set(result[key]) == steps
        assert positive(numbers(result[key]))
    indexes = {s.split(" INDEX ", 1)[1].split()[0] for s in schema.DDL if " INDEX " in s}
    assert set(result["us_saved_per_task_without_index"]) == indexes


def test_large_payload_shape(run: tuple[dict[str, Any], Path]) -> None:
    large = run[0]["suites"]["large_payload"]
    assert large["payload_mb"] == 10
    for figure in ("peak_over_payload_median", "peak_over_payload_before_decoding_median"):
        assert set(large[figure]) == {"taskengine_memory", "taskengine_sqlite"}
        assert all(value > 0 for value in large[figure].values())
