"""The APP of the CLI tests: ``taskengine worker tests.cli.worker_app:setup``.

Handlers run in worker processes; they leave marker files in ``$CLI_TEST_MARKERS`` (inherited
from the node's environment) so the tests can see that an attempt started and that a worker ran
its shutdown method.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import taskengine


def _markers() -> Path:
    return Path(os.environ["CLI_TEST_MARKERS"])


def square(payload: int) -> int:
    return payload * payload


def sleep(payload: dict[str, Any]) -> str:
    # Written whole, then renamed: a reader never sees an empty marker.
    temporary = _markers() / f".started-{os.getpid()}"
    temporary.write_text(str(os.getpid()))
    temporary.rename(_markers() / f"started-{os.getpid()}")
    if "gate" in payload:  # run until the test opens the gate (a file), at most two minutes
        deadline = time.monotonic() + 120
        while not Path(payload["gate"]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(float(payload["seconds"]))
    return "slept"


def shutdown() -> None:
    (_markers() / f"shutdown-{os.getpid()}").write_text("done")


def fail(payload: Any) -> None:
    raise ValueError(f"planned failure of {payload!r}")


def setup(engine: taskengine.TaskEngine) -> None:
    engine.register_handler("square", __name__, "square", max_worker_count=2)
    engine.register_handler("fail", __name__, "fail", max_worker_count=1)
    engine.register_handler(
        "sleep", __name__, "sleep", max_worker_count=1, shutdown_method="shutdown"
    )


def broken_setup(engine: taskengine.TaskEngine) -> None:
    raise RuntimeError("this setup always fails")
