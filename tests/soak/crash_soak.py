"""The crash soak (faults.md#fault-25): SIGKILL a busy engine on SQLite again and again, then check.

Usage: ``python -m tests.soak.crash_soak [--kills N] [--seed S] [--workdir DIR]`` from the
repository root; prints the figures as JSON and exits 1 if a check failed.

Each round starts ``driver.py`` (an engine on a SqliteStore under a steady random workload) in
its own session and SIGKILLs the whole process group: at a random moment, inside a
``create_many`` transaction, inside a group commit, inside a retention sweep, or during
``stop()`` (the driver holds the transaction open, or announces ``stop()``, so the kill lands
exactly there).  After each kill: every process the engine had (workers, forkserver) must be
gone, the file must pass ``PRAGMA integrity_check``, and the attempts left ``processing`` are
recorded as "cut by this kill".  A last run drains every task and stops cleanly.

An audit trigger (added to the test's database, not to taskengine's schema) copies every
deleted row into ``soak_deleted`` in the deleting transaction itself, so a deletion is on
record exactly when it happened.  The checks at the end:

* every acknowledged id is stored, or was deleted legitimately: by its retention (finished, and
  ``date_retain_until`` passed, or ``retain_for == 0`` at its final write), or by ``remove``;
* every stored task is final (success, failed or cancelled);
* at-least-once: each success has the log line of its successful attempt;
* no attempt ran twice (no duplicate ``"<id> <attempt>"`` line), none ran uncounted (no logged
  attempt above the task's ``attempts``), and every extra execution of a task that cannot fail
  by itself was an attempt cut by a kill.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

import taskengine

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")
#: Kinds of kill, in turn (each round picks the next one).
KINDS = ("random", "insert_many", "random", "apply_and_claim", "purge_expired", "stop")
FINAL = ("success", "failed", "cancelled")
#: Actions whose handler never fails by itself: any re-run must be explained by a kill.
STEADY = ("ok", "sleep", "long")

AUDIT = """
CREATE TABLE IF NOT EXISTS soak_deleted (
    id TEXT, status TEXT, attempts INTEGER, retain_for REAL, date_retain_until INTEGER,
    deleted_at INTEGER
);
CREATE TRIGGER IF NOT EXISTS soak_audit AFTER DELETE ON tasks BEGIN
    INSERT INTO soak_deleted VALUES (
        OLD.id, OLD.status, OLD.attempts, OLD.retain_for, OLD.date_retain_until,
        CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)
    );
END;
"""


class Soak:
    """State of one soak run."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.db = workdir / "tasks.db"
        self.rng = random.Random(seed)
        self.seed = seed
        self.cut: set[tuple[str, int]] = set()
        self.kills: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.orphans = 0
        self.generation = 0

    # -- processes ----------------------------------------------------------------------

    def _start(self, mode: str) -> subprocess.Popen[bytes]:
        for marker in self.workdir.glob("paus*"):
            marker.unlink()
        for name in ("ready", "stop", "stopping", "stopped"):
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / name).unlink()
        self.generation += 1
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        seed = str(self.seed * 1000 + self.generation)
        stderr = (self.workdir / f"driver-{self.generation}.stderr").open("wb")
        with stderr:
            return subprocess.Popen(
                [sys.executable, str(DRIVER), mode, str(self.db), str(self.workdir), seed],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def _wait_for(self, proc: subprocess.Popen[bytes], name: str, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while not (self.workdir / name).exists():
            if proc.poll() is not None:
                err = (self.workdir / f"driver-{self.generation}.stderr").read_text()
                raise RuntimeError(f"the driver exited with {proc.returncode}:\n{err}")
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the driver's process group; every process it had must end by itself."""
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        alive = family
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.02)
        if alive:
            self.orphans += len(alive)
            self.failures.append(f"orphans after kill {self.generation}: {alive}")
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()

    def round(self, kind: str) -> None:
        """Start the driver, kill it as ``kind`` says, check what is left."""
        proc = self._start("work")
        try:
            if not self._wait_for(proc, "ready", 60):
                raise RuntimeError("the driver never became ready")
            landed = kind
            if kind == "random":
                time.sleep(self.rng.uniform(0.2, 1.5))
            elif kind == "stop":
                time.sleep(self.rng.uniform(0.3, 1.0))
                (self.workdir / "stop").touch()
                self._wait_for(proc, "stopping", 30)
                time.sleep(self.rng.uniform(0.0, 0.25))
                if (self.workdir / "stopped").exists():
                    landed = "after_stop"
            else:
                time.sleep(self.rng.uniform(0.1, 0.6))
                (self.workdir / f"pause-{kind}").touch()
                if not self._wait_for(proc, f"paused-{kind}", 10):
                    landed = "random"  # the site was not reached in time: an ordinary kill
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        self._kill(proc)
        self.kills[landed] += 1
        self._after_kill()

    def _after_kill(self) -> None:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                self.failures.append(f"integrity_check after kill {self.generation}: {check}")
            rows = conn.execute("SELECT id, attempts FROM tasks WHERE status = 'processing'")
            self.cut.update((task_id, attempts) for task_id, attempts in rows)
        finally:
            conn.close()

    def drain(self) -> None:
        """A last, unkilled run that finishes every task and stops cleanly."""
        proc = self._start("drain")
        code = proc.wait(timeout=600)
        if code != 0:
            err = (self.workdir / f"driver-{self.generation}.stderr").read_text()
            self.failures.append(f"the drain run exited with {code}: {err[-2000:]}")

    # -- checks -------------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        acks = dict(_lines(self.workdir / "acks", 2))
        removed = {fields[0] for fields in _lines(self.workdir / "removes", 1)}
        runs = [(task_id, int(n)) for task_id, n in _lines(self.workdir / "runs.log", 2)]
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            stored = {
                row[0]: row[1:] for row in conn.execute("SELECT id, status, attempts FROM tasks")
            }
            deleted = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT id, status, attempts, retain_for, date_retain_until, deleted_at "
                    "FROM soak_deleted"
                )
            }
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        fail = self.failures.append
        if check != "ok":
            fail(f"final integrity_check: {check}")
        for task_id in acks:
            if task_id in stored:
                continue
            if task_id not in deleted:
                fail(f"LOST: acknowledged task {task_id} is neither stored nor deleted")
                continue
            status, _, retain_for, retain_until, at = deleted[task_id]
            by_retention = (
                status in FINAL and retain_until is not None and retain_until <= at
            ) or (retain_for == 0)
            if not by_retention and task_id not in removed:
                fail(f"task {task_id} deleted while {status} without retention or remove")
        for task_id, (status, _) in stored.items():
            if status not in FINAL:
                fail(f"task {task_id} ended {status}, not final")
        counted = collections.Counter(runs)
        twice = [pair for pair, count in counted.items() if count > 1]
        if twice:
            fail(f"attempts that ran twice: {twice[:10]}")
        attempts_of = {t: row[1] for t, row in stored.items()}
        attempts_of.update({t: row[1] for t, row in deleted.items() if t not in stored})
        for task_id, n in counted:
            if task_id in attempts_of and n > attempts_of[task_id]:
                fail(f"task {task_id} ran attempt {n} but counts {attempts_of[task_id]}")
        finals = {t: (row[0], row[1]) for t, row in deleted.items() if row[0] == "success"}
        finals.update({t: (row[0], row[1]) for t, row in stored.items()})
        for task_id, (status, attempts) in finals.items():
            if status == "success" and (task_id, attempts) not in counted:
                fail(f"task {task_id} is a success but its attempt {attempts} never ran")
        duplicates = 0
        runs_of: dict[str, list[int]] = collections.defaultdict(list)
        for task_id, n in counted:
            runs_of[task_id].append(n)
        for task_id, action in acks.items():
            if action not in STEADY:
                continue
            if task_id in stored:
                status, attempts = stored[task_id]
                last_ran_ok = status == "success"
            elif task_id in deleted:
                status, attempts = deleted[task_id][0], deleted[task_id][1]
                # Deleted while processing: the final write of a zero-retention task, which
                # may have been its success.
                last_ran_ok = status in ("success", "processing")
            else:
                continue
            for n in runs_of[task_id]:
                if n == attempts and last_ran_ok:
                    continue
                duplicates += 1
                if (task_id, n) not in self.cut:
                    fail(f"task {task_id} re-ran after attempt {n}, which no kill cut")
        return {
            "seed": self.seed,
            "kills": sum(self.kills.values()),
            "kills_by_kind": dict(self.kills),
            "tasks_acknowledged": len(acks),
            "tasks_checked": len(set(acks) | set(stored)),
            "tasks_deleted_by_retention_or_remove": len(set(acks) - set(stored)),
            "executions": len(runs),
            "attempts_cut_by_kills": len(self.cut),
            "duplicate_executions": duplicates,
            "orphan_processes": self.orphans,
            "failures": self.failures,
        }


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _lines(path: Path, width: int) -> list[tuple[str, ...]]:
    """Complete lines of an O_APPEND log (a kill can leave no partial line: one write each)."""
    if not path.exists():
        return []
    return [tuple(line.split()[:width]) for line in path.read_text().splitlines() if line]


def run(kills: int, seed: int, workdir: Path) -> dict[str, Any]:
    """Run a soak of ``kills`` rounds in ``workdir``; return the figures."""
    soak = Soak(workdir, seed)
    store = taskengine.SqliteStore(soak.db)
    store.open()
    store.close()
    conn = sqlite3.connect(soak.db)
    conn.executescript(AUDIT)
    conn.close()
    started = time.monotonic()
    for index in range(kills):
        began = time.monotonic()
        soak.round(KINDS[index % len(KINDS)])
        print(f"round {index + 1}: {time.monotonic() - began:.1f}s", file=sys.stderr)
    began = time.monotonic()
    soak.drain()
    print(f"drain: {time.monotonic() - began:.1f}s", file=sys.stderr)
    figures = soak.check()
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="taskengine-soak-") as folder:
            figures = run(args.kills, args.seed, Path(folder))
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args.kills, args.seed, args.workdir)
    print(json.dumps(figures, indent=2))
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
