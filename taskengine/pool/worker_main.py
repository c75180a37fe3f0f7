"""The worker process: import the handler, initialise, run attempts, shut down.

This module is the child's entry point and imports nothing from the engine or the stores.  The
worker never decides its own lifetime: it runs what it is sent until the coordinator sends
``Stop`` or goes away.  Two rules keep a dead coordinator from leaving workers behind: the main
loop treats EOF on its pipe as "exit", and a watchdog thread exits the process as soon as the
lifeline pipe (whose other end only the coordinator holds) reports EOF, even mid-handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import attrs

from taskengine.core import codec, context, models
from taskengine.pool import ledger as ledger_
from taskengine.pool import messages

__all__ = [
    "WorkerConfig",
    "init_error",
    "load_handler",
    "resolve_callable",
    "run_attempt",
    "run_shutdown",
    "run_worker",
]

#: Exit status of a worker whose coordinator disappeared.
ORPHAN_EXIT_CODE = 70


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """Everything a worker needs to start, sent once at spawn."""

    task_type: str
    module: str
    method: str
    initialise_method: str | None
    shutdown_method: str | None
    sys_path: tuple[str, ...]
    #: The coordinator's environment when the worker was started.  A forkserver child would
    #: otherwise see the environment the fork server had when it started, long ago.
    environ: tuple[tuple[str, str], ...]


def resolve_callable(module: Any, name: str) -> Callable[..., Any]:
    """Resolve ``name`` (``"func"`` or ``"Class.static_method"``) in ``module``.

    Only these two shapes are resolved: never an arbitrary dotted chain.
    """
    target: Any = module
    for part in name.split(".", 1):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{module.__name__}.{name} is not callable")
    return target  # type: ignore[no-any-return]


def _watch_lifeline(lifeline: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    os._exit(ORPHAN_EXIT_CODE)


class _Worker:
    def __init__(
        self,
        conn: Connection,
        config: WorkerConfig,
        ledger: ledger_.RevocationLedger | None = None,
    ) -> None:
        self.conn = conn
        self.config = config
        self.ledger = ledger
        self.send_lock = threading.Lock()
        self.handler: Callable[[Any], Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, message: messages.ToCoordinator) -> None:
        with self.send_lock:  # a large blob's two frames go out together
            messages.send(self.conn, message)

    def start(self) -> bool:
        os.environ.clear()
        os.environ.update(self.config.environ)
        for entry in reversed(self.config.sys_path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        try:
            self.handler = load_handler(
                self.config.module, self.config.method, self.config.initialise_method
            )
        except BaseException as exc:
            self.send(messages.InitFailed(init_error(self.config.module, self.config.method, exc)))
            return False
        self.send(messages.Ready(os.getpid()))
        return True

    def report(self, task_id: str) -> Callable[[float, str | None], None]:
        def reporter(fraction: float, message: str | None) -> None:
            # Progress is advisory: with the coordinator gone it is dropped, not raised into
            # the handler (or a thread of the handler's, which would print a traceback).
            with contextlib.suppress(OSError):
                self.send(messages.Progress(task_id, fraction, message))

        return reporter

    def run(self, job: messages.Run) -> messages.Done:
        assert self.handler is not None
        return run_attempt(self.handler, job, self.report(job.task_id), self.event_loop)

    def event_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def shutdown(self) -> None:
        error = run_shutdown(self.config.module, self.config.shutdown_method)
        if error is not None:
            with contextlib.suppress(OSError, ValueError):
                self.send(messages.ShutdownFailed(error))

    def serve(self) -> None:
        while True:
            try:
                message = messages.receive_to_worker(self.conn)
            except (EOFError, OSError):
                return  # the coordinator is gone: exit without a shutdown handshake
            if isinstance(message, messages.Stop):
                self.shutdown()
                return
            if self.ledger is not None and not self.ledger.start(message.seq):
                continue  # taken back by the coordinator: it runs on another worker
            done = self.run(message)
            try:
                self.send(done)
            except OSError:
                return  # the coordinator is gone


# -- what a worker does, shared with inline execution (taskengine/inline.py) ------------------


def load_handler(
    module_name: str, method: str, initialise_method: str | None
) -> Callable[..., Any]:
    """Import the handler's module, resolve the handler and run the initialise method.

    Raises:
        BaseException: whatever importing or initialising raised (see :func:`init_error`).
    """
    module = importlib.import_module(module_name)
    handler = resolve_callable(module, method)
    if initialise_method is not None:
        resolve_callable(module, initialise_method)()
    return handler


def init_error(module_name: str, method: str, exc: BaseException) -> models.TaskError:
    """The ``WorkerInitError`` of a worker whose start (import, initialise) raised ``exc``."""
    error = models.TaskError.from_exception(exc)
    return models.TaskError(
        type="WorkerInitError",
        message=f"starting a worker for {module_name}.{method} failed: {error.type}: "
        f"{error.message}",
        cause=error,
    )


def run_attempt(
    handler: Callable[[Any], Any],
    job: messages.Run,
    reporter: Callable[[float, str | None], None],
    event_loop: Callable[[], asyncio.AbstractEventLoop],
) -> messages.Done:
    """Run one attempt: decode the payload, call (or await) the handler, encode the result.

    The handler's exception becomes a ``TaskError`` here, so an attempt fails with the same
    error in a worker process and inline.  ``context.SimulatedCrash`` is not a handler error:
    it propagates (inline execution turns it into a crash).
    """
    task = context.TaskContext(
        id=job.task_id, type=job.task_type, attempt=job.attempt, reporter=reporter
    )
    token = context.set_current(task)
    began = time.perf_counter()
    try:
        try:
            payload = codec.decode(job.payload_blob)
            result = handler(payload)
            if inspect.isawaitable(result):
                result = event_loop().run_until_complete(_await(result))
        except context.SimulatedCrash:
            raise
        except BaseException as exc:  # SystemExit and friends are handler errors too
            error = models.TaskError.from_exception(exc)
            return messages.Done(job.task_id, None, error, time.perf_counter() - began)
        try:
            blob = codec.encode(result)
        except BaseException as exc:
            error = models.TaskError.from_exception(exc)
            error = attrs.evolve(
                error, message=f"the result could not be serialised: {error.message}"
            )
            return messages.Done(job.task_id, None, error, time.perf_counter() - began)
        return messages.Done(job.task_id, blob, None, time.perf_counter() - began)
    finally:
        context.reset_current(token)


def run_shutdown(module_name: str, shutdown_method: str | None) -> models.TaskError | None:
    """Run a worker's shutdown method; return its error, if it raised."""
    if shutdown_method is None:
        return None
    try:
        resolve_callable(importlib.import_module(module_name), shutdown_method)()
    except BaseException as exc:
        return models.TaskError.from_exception(exc)
    return None


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_worker(
    conn: Connection,
    lifeline: Connection,
    config: WorkerConfig,
    ledger: ledger_.RevocationLedger | None = None,
    inherited: tuple[int, ...] = (),
) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``).

    With a ``ledger``, the worker skips the attempts the coordinator took back from its pipe.
    ``inherited`` are the coordinator's descriptors a forked worker closes at once (the
    coordinator's ends of the worker pipes), so that its pipes report EOF when the coordinator
    dies.
    """
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    # Own process group, so a timeout can kill the handler's children too (killpg).
    with contextlib.suppress(OSError):
        os.setsid()
    # No core files: they would write payload data to disk.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Ctrl-C in a terminal is the coordinator's business; it stops workers through their pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_watch_lifeline, args=(lifeline,), name="taskengine-lifeline", daemon=True
    ).start()
    worker = _Worker(conn, config, ledger)
    try:
        if worker.start():
            worker.serve()
    except (EOFError, OSError) as exc:
        if not _coordinator_gone(exc):
            raise
        # The coordinator died between two looks at the pipe: one line, no traceback, and the
        # exit status the lifeline watchdog would have given.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(
                f"taskengine worker {os.getpid()}: the coordinator is gone "
                f"({type(exc).__name__}); exiting\n"
            )
            sys.stderr.flush()
        raise SystemExit(ORPHAN_EXIT_CODE) from None
    finally:
        with contextlib.suppress(OSError):
            conn.close()


def _coordinator_gone(exc: BaseException) -> bool:
    """Whether ``exc``, raised by the worker's pipe, means that its other end is closed."""
    return isinstance(exc, EOFError | BrokenPipeError | ConnectionResetError)
