"""Cluster safety on PostgreSQL with real processes: each slot fires on exactly one node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from taskengine.core.clock import from_millis
from tests.conftest import until

ROOT = Path(__file__).resolve().parents[2]


def start_nodes(
    dsn: str, schema: str, output: Path, count: int, hang: int, interval: float = 0.5
) -> list:
    command = [sys.executable, "-m", "tests.scheduler.node", dsn, schema, str(output)]
    nodes = [
        subprocess.Popen(
            [*command, str(hang), str(interval)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for node in nodes:
        assert node.stdout.readline().strip() == "ready"
    return nodes


def release(nodes: list, seconds: float, first_ms: int | None = None) -> int:
    """Tell every node the first slot (1-2 s from now, on a whole second) and the run length."""
    if first_ms is None:
        first_ms = (int(time.time()) + 2) * 1000
    for node in nodes:
        node.stdin.write(f"{first_ms} {seconds}\n")
        node.stdin.flush()
    return first_ms


def fired_slots(output: Path) -> list[str]:
    return [line.split()[0] for line in output.read_text().splitlines()]


def expected_slots(first_ms: int, count: int, every_ms: int = 500) -> list[str]:
    first = from_millis(first_ms)
    return [(first + timedelta(milliseconds=every_ms * k)).isoformat() for k in range(count)]


def finish(nodes: list) -> None:
    for node in nodes:
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        node.stdin.close()
        node.stdout.close()


@pytest.mark.postgres
def test_three_nodes_fire_each_slot_exactly_once(pg_schema, tmp_path: Path):
    dsn, schema = pg_schema
    output = tmp_path / "fired.txt"
    nodes = start_nodes(dsn, schema, output, 3, hang=-1)
    try:
        first_ms = release(nodes, 9.75)  # slots at 0, 0.5, ..., 9.5 s: 20 of them
    finally:
        finish(nodes)
    assert [node.returncode for node in nodes] == [0, 0, 0]
    slots = fired_slots(output)
    assert sorted(slots) == expected_slots(first_ms, 20)  # each once: none missed or repeated
    winners = {line.split()[1] for line in output.read_text().splitlines()}
    assert len(winners) >= 1


@pytest.mark.postgres
def test_a_node_killed_mid_callback_blocks_no_later_slot(pg_schema, tmp_path: Path):
    dsn, schema = pg_schema
    output = tmp_path / "fired.txt"
    nodes = start_nodes(dsn, schema, output, 3, hang=2)
    try:
        first_ms = release(nodes, 4.75)  # slots at 0 ... 4.5 s: 10; the winner of #2 hangs
        marker = Path(str(output) + ".hung")
        pid = int(until(lambda: marker.exists() and marker.read_text(), timeout=30))
        os.kill(pid, signal.SIGKILL)
    finally:
        finish(nodes)
    killed = [node for node in nodes if node.pid == pid]
    assert killed
    assert killed[0].returncode == -signal.SIGKILL
    assert sorted(fired_slots(output)) == expected_slots(first_ms, 10)
    later = [
        line
        for line in output.read_text().splitlines()
        if line.split()[0] > expected_slots(first_ms, 3)[2]
    ]
    assert later
    assert all(line.split()[1] != str(pid) for line in later)


class AheadClock:
    """The wall clock of a node whose time runs five minutes ahead."""

    def now(self):
        from datetime import UTC, datetime

        from taskengine.core.clock import truncate_to_millis

        return truncate_to_millis(datetime.now(UTC) + timedelta(minutes=5))

    def add_listener(self, listener):
        pass

    def remove_listener(self, listener):
        pass


@pytest.mark.postgres
def test_a_node_whose_clock_runs_ahead_fires_on_database_time(pg_schema):
    """Due-ness is decided by the database's clock: a fast node waits instead of firing early."""
    import threading
    from datetime import UTC, datetime

    from taskengine import ScheduledTaskTime, TaskScheduler
    from taskengine.stores.postgres.schedules import PgScheduleStore

    dsn, schema = pg_schema
    store = PgScheduleStore(dsn, schema)
    first = store.now() + timedelta(seconds=1)
    fired = []
    done = threading.Event()

    def tick(slot):
        fired.append((slot, datetime.now(UTC)))
        if len(fired) == 4:
            done.set()

    with TaskScheduler(store, clock=AheadClock()) as scheduler:
        scheduler.add_task(
            "skew", ScheduledTaskTime(next_trigger_time=first, interval_seconds=0.5), tick
        )
        assert done.wait(30)
    store.close()
    assert [slot for slot, _ in fired[:4]] == [first + timedelta(seconds=0.5 * k) for k in range(4)]
    # The database runs on this host's clock: never early by more than its rounding.
    assert all(when - slot > timedelta(milliseconds=-2) for slot, when in fired[:4])


def test_sqlite_restart_after_sigkill_neither_skips_nor_repeats_a_slot(tmp_path: Path):
    """Killed in the callback of slot #3, restarted: slots go on from #4, none twice."""
    path, output = tmp_path / "tasks.db", tmp_path / "fired.txt"
    (first,) = start_nodes(str(path), "-", output, 1, hang=3, interval=0.2)
    try:
        first_ms = release([first], 60)
        marker = Path(str(output) + ".hung")
        until(lambda: marker.exists() and marker.read_text(), timeout=30)
        first.send_signal(signal.SIGKILL)
    finally:
        finish([first])
    assert first.returncode == -signal.SIGKILL
    (second,) = start_nodes(str(path), "-", output, 1, hang=-1, interval=0.2)
    try:
        release([second], time.time() - first_ms / 1000 + 1.5, first_ms)
    finally:
        finish([second])
    assert second.returncode == 0
    lines = output.read_text().splitlines()
    slots = [line.split()[0] for line in lines]
    assert slots == sorted(set(slots))  # none twice
    by_first = [line.split()[0] for line in lines if line.split()[1] == str(first.pid)]
    assert by_first == expected_slots(first_ms, 4, every_ms=200)  # #0..#3, killed in #3
    by_second = [line.split()[0] for line in lines if line.split()[1] == str(second.pid)]
    # The restarted process fires the first slot not consumed (#4), once for all the slots
    # missed while no process ran, then every slot on the original phase.
    assert by_second[0] == expected_slots(first_ms, 5, every_ms=200)[4]
    assert len(by_second) >= 3
    # Later slots keep the original phase (previous + interval: no drift).
    for slot in by_second:
        steps = (datetime.fromisoformat(slot) - from_millis(first_ms)) / timedelta(milliseconds=200)
        assert steps == int(steps)
