"""A handler that misbehaves on request, for the fault tests (module "tests.handlers.faulty").

``action(payload)`` dispatches on ``payload["action"]`` (the Oban way).  Optional payload keys:

* ``pid_dir``: before acting, write this process's pid to ``<pid_dir>/<name>-<attempt>.pid``
  (``name`` defaults to the task id), atomically (write a temporary file, then rename), so a
  test that sees the file can read a complete pid.
* ``log``: append ``"<task id> <attempt> <time.time()>\\n"`` to this file, opened with O_APPEND
  (atomic across processes), before acting: an exact record of every execution.
* ``release``: for ``gate``, the file whose existence lets the handler return.

Besides ``action``, this module holds initialise and shutdown methods that misbehave, payload
objects whose unpickling fails in the worker, and exceptions that cannot be pickled.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import pickle
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import taskengine

#: Environment variable naming a folder where init/shutdown methods leave marker files (workers
#: get the coordinator's environment as it is when they start).
MARKER_DIR_ENV = "TASKENGINE_FAULTY_MARKERS"


def append_line(path: str, line: str) -> None:
    """Append one line with a single O_APPEND write (atomic across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees either nothing or all of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _hang() -> NoReturn:
    while True:
        time.sleep(1.0)


def _wait_for(path: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {limit}s")
        time.sleep(0.01)


# -- exceptions that do not survive pickling ------------------------------------------------


class BadInitSignatureError(Exception):
    """``Exception`` unpickling calls ``cls(*args)``, which this signature breaks."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"bad-init error {code}: {detail}")
        self.code = code
        self.detail = detail


class UnpicklableAttributeError(Exception):
    """Carries a lock, so pickling the exception object fails."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class BrokenStrError(Exception):
    """Even ``str(exc)`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


# -- payload objects that break in the worker ----------------------------------------------


def _raise_unpickling_error(message: str) -> NoReturn:
    raise pickle.UnpicklingError(f"{message} (raised in pid {os.getpid()})")


def _os_exit_at_unpickle(code: int) -> NoReturn:
    os._exit(code)


def _sys_exit_at_unpickle(code: int) -> NoReturn:
    sys.exit(code)


class ErrorAtUnpickle:
    """Pickles fine; unpickling raises ``UnpicklingError`` naming the unpickling pid."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_raise_unpickling_error, ("ErrorAtUnpickle refuses to load",))


class ExitAtUnpickle:
    """Pickles fine; unpickling calls ``os._exit(code)``."""

    def __init__(self, code: int = 5) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_os_exit_at_unpickle, (self.code,))


class SysExitAtUnpickle:
    """Pickles fine; unpickling raises ``SystemExit(code)``."""

    def __init__(self, code: int = 6) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_sys_exit_at_unpickle, (self.code,))


class ExitAtPickle:
    """Pickling calls ``os._exit(code)`` (a result that kills its worker while being sent)."""

    def __init__(self, code: int = 4) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        os._exit(self.code)


class ErrorAtPickle:
    """Pickling raises an ordinary exception."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise ValueError("ErrorAtPickle refuses to be pickled")


class SystemExitAtPickle:
    """Pickling raises ``SystemExit``: it must propagate unchanged from ``create``."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise SystemExit(42)


# -- the dispatcher ---------------------------------------------------------------------

#: Memory kept alive by the "leak" action, per worker process.
_LEAKED: list[bytearray] = []


def _spawn_grandchild(pid_file: str) -> None:
    # The grandchild ignores SIGTERM: only the SIGKILL to the worker's group can end it.
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n"
    child = subprocess.Popen([sys.executable, "-c", code])
    write_atomic(Path(pid_file), str(child.pid))


#: Number of the write(2) system call, per machine (for /proc/<pid>/task/<tid>/syscall).
WRITE_SYSCALL = {"x86_64": 1, "aarch64": 64}


def _in_big_write(tid: int, at_least: int) -> bool:
    """Whether thread ``tid`` of this process is blocked in write(2) of >= ``at_least`` bytes."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as file:
            fields = file.read().split()
    except OSError:
        return False
    if len(fields) < 4 or fields[0] != str(WRITE_SYSCALL.get(os.uname().machine)):
        return False
    return int(fields[3], 16) >= at_least


def _die_during_big_write(at_least: int) -> None:
    """SIGKILL this process while its main thread is inside a write of ``at_least`` bytes.

    A blocking write to a pipe returns only once every byte went through, so the kill lands
    after part of the message was read by the other side and before the rest was.
    """
    main = threading.get_native_id()

    def watch() -> None:
        deadline = time.monotonic() + 30
        while not _in_big_write(main, at_least) and time.monotonic() < deadline:
            time.sleep(0.0002)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def action(payload: dict[str, Any]) -> Any:
    """Do what ``payload["action"]`` says (see the module docstring)."""
    task = taskengine.current_task()
    if "log" in payload:
        append_line(payload["log"], f"{task.id} {task.attempt} {time.time()!r}\n")
    if "pid_dir" in payload:
        name = payload.get("name", task.id)
        write_atomic(Path(payload["pid_dir"]) / f"{name}-{task.attempt}.pid", str(os.getpid()))
    kind = payload["action"]
    if kind == "ok":
        return payload.get("value")
    if kind == "pid":
        return os.getpid()
    if kind == "sleep":
        time.sleep(payload["seconds"])
        return payload.get("value")
    if kind == "gate":
        _wait_for(payload["release"])
        return payload.get("value", os.getpid())
    if kind == "raise":
        raise ValueError(payload.get("message", "planned failure"))
    if kind == "os_exit0":
        os._exit(0)
    if kind == "os_exit3":
        os._exit(3)
    if kind == "c_exit":
        ctypes.CDLL(None).exit(0)
    if kind == "sigkill_self":
        os.kill(os.getpid(), signal.SIGKILL)
        _hang()
    if kind == "segv":
        faulthandler.disable()  # die of the signal itself, whatever was enabled before
        faulthandler._sigsegv()  # type: ignore[attr-defined]
        _hang()
    if kind == "segv_ctypes":
        ctypes.string_at(0)
        _hang()
    if kind == "sys_exit":
        sys.exit(payload.get("code", 7))
    if kind == "keyboard_interrupt":
        raise KeyboardInterrupt("planned interrupt")
    if kind == "hang":
        _hang()
    if kind == "hang_ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _hang()
    if kind == "spawn_child_and_hang":
        _spawn_grandchild(payload["child_pid_file"])
        _hang()
    if kind == "core_limit":
        return resource.getrlimit(resource.RLIMIT_CORE)
    if kind == "leak":
        _LEAKED.append(bytearray(b"\x01") * payload["bytes"])  # touched, so it counts in RSS
        return os.getpid()
    if kind == "die_mid_result":
        # The result is far larger than a pipe buffer: the watcher kills the process while
        # the main thread is sending it, leaving a partial message in the pipe.
        _die_during_big_write(payload["bytes"] // 2)
        return b"x" * payload["bytes"]
    if kind == "exit_in_result":
        return ExitAtPickle(4)
    if kind == "bad_result":
        return threading.Lock()
    if kind == "generator_result":
        return (i for i in range(3))
    if kind == "bad_exception":
        raise BadInitSignatureError(7, "custom signature")
    if kind == "unpicklable_exception":
        raise UnpicklableAttributeError("carries a lock")
    if kind == "broken_str_exception":
        raise BrokenStrError()
    if kind == "chained_bad_exception":
        try:
            raise UnpicklableAttributeError("inner cause")
        except UnpicklableAttributeError as exc:
            raise BadInitSignatureError(8, "outer") from exc
    raise ValueError(f"unknown action {kind!r}")


def log_attempt(payload: dict[str, Any]) -> str:
    """Append ``"<id> <attempt>\\n"`` to ``payload["log"]``; optionally sleep; return the id."""
    task = taskengine.current_task()
    append_line(payload["log"], f"{task.id} {task.attempt}\n")
    if "pid_dir" in payload:
        path = Path(payload["pid_dir"]) / f"{task.id}-{task.attempt}.pid"
        write_atomic(path, str(os.getpid()))
    seconds = payload.get("seconds", 0)
    if seconds:
        time.sleep(seconds)
    return task.id


def quick_log_attempt(payload: dict[str, Any]) -> str:
    """``log_attempt`` without the sleep (for re-running after a crash)."""
    task = taskengine.current_task()
    append_line(payload["log"], f"{task.id} {task.attempt}\n")
    return task.id


# -- initialise and shutdown methods ---------------------------------------------------------


def _marker(kind: str) -> None:
    folder = os.environ.get(MARKER_DIR_ENV)
    if folder:
        with contextlib.suppress(OSError):
            Path(folder, f"{kind}-{os.getpid()}").touch()


def init_raise() -> None:
    """An initialise method that always fails."""
    _marker("init")
    raise RuntimeError("init exploded")


def init_ok() -> None:
    """An initialise method that works."""
    _marker("init")


def shutdown_raise() -> None:
    """A shutdown method that fails."""
    _marker("shutdown")
    raise RuntimeError("shutdown exploded")


def shutdown_hang() -> None:
    """A shutdown method that never returns (and ignores SIGTERM)."""
    _marker("shutdown")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _hang()
