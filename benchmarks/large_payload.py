"""Large payload: the coordinator's peak RSS while a 100 MB payload makes one round trip.

Each sample runs in a fresh process (the coordinator): an engine with MemoryStore or SqliteStore
and one warm worker whose handler echoes its payload (``noop_handlers.noop``).  The coordinator
then builds a ``bytes`` payload of ``--mb`` MB, ``create``s the echo task, drops its own
reference to the payload (as a caller that hands data off does), and ``wait``s for the result,
which it keeps until the peak has been read.

The figure is ``(peak RSS - baseline RSS) / payload size``, where the baseline is the RSS just
before the payload existed: the payload itself counts as one copy, the returned result as one
more, so 2.0 is the floor of a round trip that copies nothing in between.  The peak is the
kernel's high-water mark of the process (``VmHWM``, reset to the current RSS just before the
baseline through ``/proc/self/clear_refs``; where that reset is not allowed, ``ru_maxrss``,
which then includes the engine's start).  A second figure stops at the return of ``wait``,
before the result is decoded: 2.0 is its floor (the task ``wait`` returns holds the payload's
blob and the result's).  Medians over rounds.  Sizes under glibc's largest mmap threshold
(32 MiB) read higher: such blocks may come from the heap, where freed blocks stay resident and
growing a buffer copies it, so the ``--quick`` figures (10 MB) are only a smoke run.

    .venv/bin/python -m benchmarks.large_payload [--mb 100] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import taskengine
from benchmarks import common

NAMES = ("taskengine_memory", "taskengine_sqlite")
MB = 1_000_000


def _status_kib(field: str) -> int:
    """A ``kB`` figure of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def _peak_bytes(reset: bool) -> int:
    if reset:
        return _status_kib("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def round_trip(store: taskengine.stores.TaskStore, size: int) -> dict[str, Any]:
    """One echo round trip of a ``size``-byte payload; RSS figures in bytes and ratios."""
    with taskengine.TaskEngine(store, max_total_workers=1) as engine:
        engine.register_handler("echo", "benchmarks.noop_handlers", "noop", max_worker_count=1)
        # The worker is up and the code paths are warm before the baseline is read.
        engine.wait(engine.create("echo", b"warm-up" * 1000), timeout=120)
        reset = _reset_peak()
        baseline = _status_kib("VmRSS") * 1024
        # A repetition, made in one allocation (appending a tail would copy it once more).
        payload = bytes(range(256)) * (size // 256)
        size = len(payload)
        task_id = engine.create("echo", payload, retry_count=0)
        del payload  # handed off: the engine holds what it needs
        done = engine.wait(task_id, timeout=600)
        before_decoding = _peak_bytes(reset)
        if done.status is not taskengine.TaskStatus.SUCCESS:
            raise RuntimeError(f"the echo task ended {done.status}: {done.error}")
        result = done.result
        peak = _peak_bytes(reset)
        if len(result) != size:
            raise RuntimeError(f"the echo returned {len(result)} bytes, not {size}")
        del result, done
    return {
        "peak_source": "VmHWM" if reset else "ru_maxrss",
        "baseline_mib": round(baseline / common.MIB, 1),
        "peak_mib": round(peak / common.MIB, 1),
        "peak_over_payload": round((peak - baseline) / size, 2),
        "peak_over_payload_before_decoding": round((before_decoding - baseline) / size, 2),
    }


def child(name: str, size: int) -> dict[str, Any]:
    if name == "taskengine_memory":
        return round_trip(taskengine.MemoryStore(), size)
    with tempfile.TemporaryDirectory() as tmp:
        return round_trip(taskengine.SqliteStore(Path(tmp) / "large.db"), size)


def measure(name: str, size: int) -> dict[str, Any]:
    """One sample of ``name`` in a fresh coordinator process (its peak is this round trip's)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.large_payload", "--child", name, "--bytes", str(size)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    sample: dict[str, Any] = json.loads(out.stdout)
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=100, help="payload size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=NAMES)
    parser.add_argument("--bytes", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a 10 MB payload, 1 round")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.bytes or args.mb * MB)))
        return
    if args.quick:
        args.mb, args.rounds = 10, 1
    size = args.mb * MB
    load_before = [round(x, 2) for x in os.getloadavg()]
    names = list(NAMES)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            samples[name].append(measure(name, size))
    common.emit(
        {
            "benchmark": "large_payload",
            "payload_mb": args.mb,
            "rounds": args.rounds,
            "ratio": "(peak RSS - RSS before the payload existed) / payload size",
            "peak_over_payload_median": {
                name: common.median(s["peak_over_payload"] for s in runs)
                for name, runs in samples.items()
            },
            "peak_over_payload_before_decoding_median": {
                name: common.median(s["peak_over_payload_before_decoding"] for s in runs)
                for name, runs in samples.items()
            },
            "load_average_before": load_before,
            "samples": samples,
        }
    )


if __name__ == "__main__":
    main()
