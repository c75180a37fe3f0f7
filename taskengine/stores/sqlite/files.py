"""The SQLite database file on disk: its URI, its creation and modes, and the dispatch lock.

``SqliteStore`` keeps its connections and transactions; what concerns the file itself, before
and besides SQLite, is here.  The file is created 0600 before SQLite first sees it (SQLite gives
-wal and -shm the same mode, and ``check_side_files`` enforces it), a warning is logged when
the file or its directory is writable by group or others (the trust boundary: whoever can write
the file can run code as the engine's user), and a file that a failed open created is removed
again.  The dispatch lock (one dispatching engine per file) is an ``flock`` on a file beside
the database plus, on Linux, an abstract Unix socket named after its device and inode.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
import sys
import urllib.parse
from typing import Final

from taskengine.core import errors

__all__ = [
    "INODE_LOCKS",
    "DispatchLock",
    "check_side_files",
    "create_file",
    "remove_if_empty",
    "sqlite_uri",
]

logger = logging.getLogger(__name__)


def sqlite_uri(path: str) -> str:
    """The ``file:`` URI that opens the existing file ``path`` read-write, whatever its name.

    ``path`` must be absolute.  An empty authority (``file://``) comes first, so that a path
    that itself starts with ``//`` is never read as an authority, and every character outside
    the unreserved set is percent-encoded, so ``?``, ``#``, ``%`` and spaces stay in the name.
    """
    return f"file://{urllib.parse.quote(path, safe='/')}?mode=rw"


#: Abstract Unix sockets (Linux) carry the per-inode half of the dispatch lock.
INODE_LOCKS: Final = sys.platform.startswith("linux")


def remove_if_empty(path: str, created: tuple[int, int]) -> None:
    """Remove the file that a failed open created, unless someone else has used it since."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if (info.st_dev, info.st_ino) == created and info.st_size == 0:
            os.unlink(path)


def claim_inode(real_path: str) -> socket.socket | None:
    """Bind the abstract socket of the file's device and inode; None if another holds it.

    An abstract name lives as long as a socket bound to it, in no file system, and is shared
    by every process of the network namespace: whichever name reached the file, two engines on
    one file compute the same socket name.

    Raises:
        StoreError: the file cannot be examined or the socket cannot be made.
    """
    try:
        info = os.stat(real_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except OSError as exc:
        raise errors.StoreError(f"cannot lock {real_path}: {exc}") from exc
    try:
        sock.bind(f"\0taskengine-dispatch/{info.st_dev}/{info.st_ino}")
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise errors.StoreError(f"cannot lock {real_path}: {exc}") from exc
    return sock


def warn_if_writable_by_others(path: str, what: str) -> None:
    """Log a warning when ``path`` is writable by its group or by others."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # connecting reports the real problem
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        logger.warning(
            "the %s %s is writable by group or others (mode %o): anyone who can write it "
            "can run code as this user through the task payloads",
            what,
            path,
            stat.S_IMODE(mode),
        )


def create_file(path: str) -> tuple[int, int] | None:
    """Create the file 0600 before SQLite sees it; warn about loose permissions.

    Returns the device and inode of the file when this call created it, so that a failed
    open can remove it again (:func:`remove_if_empty`); None when it was there already.

    Raises:
        StoreError: the file cannot be created.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        warn_if_writable_by_others(path, "database file")
        created = None
    except OSError as exc:
        raise errors.StoreError(f"cannot create {path}: {exc.strerror}") from exc
    else:
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        created = (info.st_dev, info.st_ino)
    warn_if_writable_by_others(os.path.dirname(path), "directory of database file")
    return created


def check_side_files(path: str) -> None:
    """Give -wal and -shm no more permission than the main file has.

    Raises:
        StoreError: the files cannot be examined.
    """
    try:
        allowed = stat.S_IMODE(os.stat(path).st_mode)
        for suffix in ("-wal", "-shm"):
            side = path + suffix
            with contextlib.suppress(FileNotFoundError):
                mode = stat.S_IMODE(os.stat(side).st_mode)
                if mode & ~allowed:
                    logger.warning("%s had mode %o; setting %o", side, mode, allowed)
                    os.chmod(side, allowed)
    except OSError as exc:
        raise errors.StoreError(f"cannot check {path}: {exc.strerror}") from exc


class DispatchLock:
    """The held dispatch lock of one database file: see :meth:`acquire`."""

    __slots__ = ("_fd", "_socket")

    def __init__(self, fd: int, sock: socket.socket | None) -> None:
        self._fd: int | None = fd
        self._socket = sock

    @classmethod
    def acquire(cls, path: str, node_identity: str) -> DispatchLock:
        """Take the dispatch lock of the database file ``path`` for ``node_identity``.

        The lock follows the file, not the name it was opened by.  Its first half is an
        exclusive ``flock`` on ``<real path>.lock``, beside the file that the path resolves to
        (symbolic links, ``..`` and doubled slashes resolved when the lock is taken), which
        records the holder's node identity for the error message.  Its second half, on Linux,
        is an abstract Unix socket named after the file's device and inode, which every hard
        link of the file reaches too.  The kernel drops both when the holder dies, so a crashed
        engine never blocks its successor.

        Raises:
            StoreError: another engine (in this or another process) holds it.
        """
        real = os.path.realpath(path)
        lock_path = real + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise errors.StoreError(f"cannot create {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise _in_use(path, holder) from exc
        try:
            sock = claim_inode(real) if INODE_LOCKS else None
            if INODE_LOCKS and sock is None:
                raise _in_use(path, "through another name of the same file")
        except BaseException:
            os.close(fd)  # drops the flock taken above
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, node_identity.encode(), 0)
        return cls(fd, sock)

    def release(self) -> None:
        """Drop both halves of the lock; calling it again does nothing."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if self._socket is not None:
            self._socket.close()  # frees its abstract name at once
            self._socket = None


def _in_use(path: str, holder: str) -> errors.StoreError:
    return errors.StoreError(
        f"{path} is already used by another running engine ({holder}); "
        "one SQLite file has one dispatching engine"
    )
