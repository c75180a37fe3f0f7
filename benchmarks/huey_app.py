"""The Huey peer: a SqliteHuey queue and its no-op task, importable by the consumer process.

The consumer polls as tightly as Huey allows (1 ms, no back-off) and runs two worker processes,
so that Huey's figure is its per-task cost rather than its idle polling delay.  Both Huey and
the taskengine SqliteStore write with ``synchronous = FULL``.
"""

from __future__ import annotations

import sys

from huey import SqliteHuey


def make_huey(path: str) -> tuple[SqliteHuey, object]:
    """A Huey instance on ``path`` and its registered no-op task."""
    # A long busy timeout: with the default 5 s, a loaded machine makes Huey's own writes fail
    # with "database is locked" (a lost task, or an exception from enqueue).
    huey = SqliteHuey(filename=path, fsync=True, timeout=60)

    @huey.task(name="noop")
    def noop(payload: object) -> bool:
        return True  # Huey stores no result for None, and the benchmark counts results

    return huey, noop


def consume(path: str, workers: int) -> None:
    """Run a consumer with ``workers`` processes until SIGINT."""
    huey, _ = make_huey(path)
    consumer = huey.create_consumer(
        workers=workers,
        worker_type="process",
        periodic=False,
        initial_delay=0.001,
        backoff=1.0,
        max_delay=0.001,
        check_worker_health=False,
    )
    consumer.run()


if __name__ == "__main__":
    # Huey names tasks by module: register them under benchmarks.huey_app, not __main__.
    from benchmarks import huey_app

    huey_app.consume(sys.argv[1], int(sys.argv[2]))
