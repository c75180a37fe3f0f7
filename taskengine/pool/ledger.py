"""The revocation ledger of one worker: which of its prefetched attempts it may still start.

A worker is sent more attempts than it runs at once (prefetch), so that it never idles through
a round trip to the coordinator.  When run times change (short attempts, then long ones) an
attempt can wait in a busy worker's pipe while another worker is idle; the coordinator then
takes it back and sends it to the idle worker.  The ledger makes that safe without the busy
worker's help, which it could not give in time: its handler holds the main thread and, often,
the GIL.

It is a small block of shared memory, one per worker, locked with a POSIX record lock
(``fcntl.lockf``): the kernel drops such a lock when its process dies, so a worker killed while
holding it cannot block the coordinator, and nothing (no named semaphore, no file name) is left
behind by a process that is killed.  Each attempt sent to the worker is numbered (``Run.seq``:
1, 2, ... in send order).  Cell 0 holds the number of the last attempt the worker started; the
other cells hold the numbers of attempts taken back, each in the cell of its number modulo
``SLOTS``.  Under the lock the worker marks an attempt started unless it was taken back, and
the coordinator takes back only attempts numbered above the last one started, so every attempt
is either started by the worker or taken back, never both.  A taken-back attempt stays in the
pipe until the worker reads and skips it.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import tempfile
import time
from collections.abc import Iterable
from multiprocessing import reduction
from typing import Any, Final

__all__ = ["SLOTS", "RevocationLedger"]

#: Cells for taken-back numbers.  The numbers that can still be in the pipe span fewer than this
#: (the pipe holds at most ``pool.PREFETCH_BYTES`` of prefetched attempts, a few hundred), so a
#: cell is never needed by two of them at once.
SLOTS: Final = 1024
_BYTES: Final = 8 * (SLOTS + 1)
#: Pause between two tries of the coordinator for a lock the worker holds (for microseconds).
_RETRY: Final = 0.0002


def _anonymous_file() -> int:
    """A descriptor of a file no other process can open by name (and that leaves none)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("taskengine-ledger", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as file:  # unlinked at once
        return os.dup(file.fileno())


class RevocationLedger:
    """Shared between the coordinator and one worker process (passed at spawn)."""

    def __init__(self) -> None:
        self._fd = _anonymous_file()
        os.ftruncate(self._fd, _BYTES)  # zeroed: no attempt is numbered 0
        self._map_cells()

    def _map_cells(self) -> None:
        self._map = mmap.mmap(self._fd, _BYTES)
        self._cells = memoryview(self._map).cast("q")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Only while a worker is spawned: its descriptor travels to the child.
        return _rebuild, (reduction.DupFd(self._fd),)

    def close(self) -> None:
        """Unmap and close this side (the coordinator's, once the worker has exited)."""
        with contextlib.suppress(ValueError, OSError):
            self._cells.release()
            self._map.close()
            os.close(self._fd)

    def start(self, seq: int) -> bool:
        """Worker side: mark attempt ``seq`` started; False if it was taken back (skip it)."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            if self._cells[1 + seq % SLOTS] == seq:
                return False
            self._cells[0] = seq
            return True
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def take_back(self, newest_first: Iterable[int], most: int, timeout: float) -> list[int]:
        """Coordinator side: take back up to ``most`` of ``newest_first`` that have not started.

        ``newest_first`` are numbers of attempts sent and not known to have started, newest
        first.  Returns the numbers taken back: the worker will skip them.  Takes nothing if
        the lock is not free within ``timeout`` seconds (a stopped worker holding it).
        """
        if most < 1 or not self._lock(timeout):
            return []
        try:
            started = self._cells[0]
            taken: list[int] = []
            for seq in newest_first:
                if len(taken) >= most or seq <= started:
                    break
                self._cells[1 + seq % SLOTS] = seq
                taken.append(seq)
            return taken
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _lock(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_RETRY)
            else:
                return True


def _rebuild(fd: Any) -> RevocationLedger:
    ledger = RevocationLedger.__new__(RevocationLedger)
    ledger._fd = fd.detach()
    ledger._map_cells()
    return ledger
