"""One run of the crash soak's engine (``crash_soak.py`` starts it, then SIGKILLs its group).

Usage: ``python tests/soak/driver.py MODE DB WORKDIR SEED`` with the repository root on
PYTHONPATH.  ``MODE`` is ``work`` (a steady random mix of creates, batches, cancels, retries
and removes of tasks that succeed, fail, crash their worker, time out, or are kept for a short
retention) or ``drain`` (no new work: run until no task is pending or processing, then stop
cleanly and exit 0).

Files in WORKDIR, each line written with one O_APPEND write:

* ``acks``: ``"<id> <action>"`` for every id a ``create``/``create_many`` returned;
* ``removes``: ``"<id>"`` *before* each ``remove`` call (the deletion it may cause is legitimate);
* ``runs.log``: the handler's ``"<id> <attempt>"`` lines;
* markers: ``ready`` once dispatching, ``paused-<site>`` when a hook holds a write transaction
  open (after its statements, before COMMIT) because ``pause-<site>`` was asked for,
  ``stopping`` right before ``stop()`` is called when ``stop`` was asked for, ``stopped`` after.

Workers use the forkserver start method, which imports this file again as ``__mp_main__``:
everything runs under the ``__main__`` guard.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import taskengine
from tests.handlers.faulty import append_line

SITES = ("insert_many", "apply_and_claim", "purge_expired")
ACTIONS = (("ok", 50), ("sleep", 20), ("fail", 12), ("crash", 10), ("hang", 2), ("long", 6))
#: Tasks one run creates at most: a steady load the workers keep up with, not a flood.
CREATE_BUDGET = 40
RETAIN = (0, None, None, 0.3, 1.0)


class HookedStore(taskengine.SqliteStore):
    """A SqliteStore that can hold a write transaction open, so a kill lands inside it."""

    def __init__(self, path: str, workdir: Path) -> None:
        super().__init__(path)
        self.workdir = workdir

    @contextlib.contextmanager
    def _held_transaction(self, *, durable: bool = True) -> Iterator[Any]:
        # Every write transaction of the store runs through this one (the group commit of
        # creates takes the write lock itself and calls it directly).
        with super()._held_transaction(durable=durable) as conn:
            yield conn
            site = _caller_site()
            request = self.workdir / f"pause-{site}"
            if site is not None and request.exists():
                with contextlib.suppress(FileNotFoundError):
                    request.unlink()
                    (self.workdir / f"paused-{site}").touch()
                    threading.Event().wait()  # until the harness kills the process


def _caller_site() -> str | None:
    frame = sys._getframe(3)
    while frame is not None:
        if frame.f_code.co_name in SITES:
            return frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _payload(rng: random.Random, log: str) -> dict[str, Any]:
    action = rng.choices([a for a, _ in ACTIONS], [w for _, w in ACTIONS])[0]
    payload: dict[str, Any] = {"log": log, "action": action}
    if action == "sleep":
        payload["seconds"] = rng.uniform(0.01, 0.1)
    elif action == "long":  # runs long enough to be running at many kills
        payload.update(action="sleep", seconds=rng.uniform(0.3, 0.45))
    return payload


def _options(rng: random.Random) -> dict[str, Any]:
    options: dict[str, Any] = {
        "retry_count": rng.choice([0, 1, 2]),
        "retry_interval": rng.choice([0, 0.05, 0.2]),
        "retain_for": rng.choice(RETAIN),
    }
    if rng.random() < 0.15:
        options["run_at"] = datetime.now(UTC) + timedelta(seconds=rng.uniform(0, 1.0))
    return options


def work(
    engine: taskengine.TaskEngine, workdir: Path, rng: random.Random, known: list[str]
) -> None:
    log = str(workdir / "runs.log")
    before = len(known)
    while True:
        if (workdir / "stop").exists():
            (workdir / "stopping").touch()
            engine.stop(timeout=10)
            (workdir / "stopped").touch()
            threading.Event().wait()
        roll = rng.random()
        if roll < 0.55 and len(known) - before >= CREATE_BUDGET:
            roll = 0.55 + rng.random() * 0.45  # budget spent: only cancels, retries, removes
        if roll < 0.40:
            payload = _payload(rng, log)
            task_id = engine.create("soak", payload, **_options(rng))
            append_line(str(workdir / "acks"), f"{task_id} {payload['action']}\n")
            known.append(task_id)
        elif roll < 0.55:
            payloads = [_payload(rng, log) for _ in range(rng.randint(2, 12))]
            ids = engine.create_many("soak", payloads, **_options(rng))
            lines = "".join(f"{i} {p['action']}\n" for i, p in zip(ids, payloads, strict=True))
            append_line(str(workdir / "acks"), lines)
            known.extend(ids)
        elif roll < 0.65 and known:
            engine.cancel(rng.choice(known))
        elif roll < 0.75 and known:
            engine.retry(rng.choice(known))
        elif roll < 0.78 and known:
            victim = rng.choice(known)
            append_line(str(workdir / "removes"), f"{victim}\n")
            engine.remove(victim)
        time.sleep(rng.uniform(0.01, 0.08))


def main(mode: str, db: str, workdir: Path, seed: int) -> None:
    rng = random.Random(seed)
    engine = taskengine.TaskEngine(
        HookedStore(db, workdir), retry_interval=0.1, max_total_workers=4
    )
    engine.register_handler(
        "soak",
        "tests.soak.handlers",
        "work",
        max_worker_count=4,
        execution_timeout=0.6,
        shutdown_method="slow_shutdown",
    )
    engine.start()
    (workdir / "ready").touch()
    if mode == "work":
        acks = workdir / "acks"
        known = [line.split()[0] for line in acks.read_text().splitlines()] if acks.exists() else []
        work(engine, workdir, rng, known)
    elif mode == "drain":
        while True:
            left = [
                t
                for status in ("pending", "processing")
                for t in engine.query(status=status, page_size=1).entities
            ]
            if not left:
                break
            time.sleep(0.2)
        engine.stop(timeout=30)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
