"""``AsyncTaskEngine``: awaitable calls, thread-free waits, async callbacks on the loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import taskengine
from taskengine import aio

from ..conftest import until, worker_pids

BASIC = "tests.handlers.basic"


def _run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_create_wait_query_stats_on_a_loop(tmp_path: Path) -> None:
    async def main() -> None:
        async with taskengine.AsyncTaskEngine(
            taskengine.TaskEngine(taskengine.SqliteStore(tmp_path / "t.db"))
        ) as engine:
            await engine.register_handler("add", BASIC, "add", max_worker_count=2)
            ids = await engine.create_many(
                "add", [{"a": n, "b": 1} for n in range(5)], retain_for=None
            )
            finished = await asyncio.gather(*(engine.wait(i, timeout=60) for i in ids))
            assert [t.result for t in finished] == [n + 1 for n in range(5)]
            page = await engine.query("add", "success", page_size=10)
            assert [t.id for t in page.entities] == ids
            snapshot = await engine.stats()
            assert snapshot.of("add").success == 5
            assert snapshot.of("add").tasks_done == 5
            assert snapshot.is_dispatching
            got = await engine.get(ids[0])
            assert got is not None
            assert await engine.remove(ids[0]) is True
            assert await engine.get(ids[0]) is None

    _run(main())
    until(lambda: not worker_pids(), timeout=10)


def test_wait_holds_no_thread_and_the_loop_stays_responsive() -> None:
    async def main() -> None:
        async with taskengine.AsyncTaskEngine(taskengine.TaskEngine()) as engine:
            await engine.register_handler("sleep", BASIC, "sleep", max_worker_count=1)
            task_ids = [await engine.create("sleep", {"seconds": 1.0}) for _ in range(2)]
            waiters = [asyncio.create_task(engine.wait(t, timeout=60)) for t in task_ids * 20]
            threads_while_waiting = await _threads_after_settling()
            ticks = 0
            while not all(w.done() for w in waiters):
                await asyncio.sleep(0.01)  # the loop keeps turning while 40 waits are pending
                ticks += 1
            results = await asyncio.gather(*waiters)
            assert {t.status for t in results} == {taskengine.TaskStatus.SUCCESS}
            assert ticks > 10
            # 40 waiters, yet no more threads than the engine's own plus the small executor.
            assert threads_while_waiting < 20

    _run(main())


async def _threads_after_settling() -> int:
    await asyncio.sleep(0.1)
    return threading.active_count()


def test_wait_timeout_unknown_id_and_stop() -> None:
    async def main() -> None:
        engine = aio.AsyncTaskEngine()
        await engine.start()
        task_id = await engine.create("nobody-handles-this")
        with pytest.raises(TimeoutError):
            await engine.wait(task_id, timeout=0.05)
        with pytest.raises(taskengine.TaskNotFoundError):
            await engine.wait("0" * 32, timeout=1)
        with pytest.raises(taskengine.TaskValidationError):
            await engine.wait(task_id, timeout=-1)
        pending = asyncio.create_task(engine.wait(task_id))
        await asyncio.sleep(0)
        await engine.stop()
        with pytest.raises(taskengine.EngineStoppedError):
            await pending

    _run(main())


def test_async_callbacks_run_on_the_service_loop_in_order() -> None:
    seen: list[tuple[str, str]] = []
    loops: set[int] = set()

    async def main() -> None:
        loop_thread = threading.get_ident()

        async def on_change(task: taskengine.BackgroundTask) -> None:
            loops.add(threading.get_ident())
            await asyncio.sleep(0)  # yields: a later callback for the task must still wait
            seen.append((task.id, task.status.value))

        async with taskengine.AsyncTaskEngine(taskengine.TaskEngine()) as engine:
            await engine.register_handler("echo", BASIC, "echo", on_change)
            task_id = await engine.create("echo", "hi", retain_for=None)
            await engine.wait(task_id, timeout=60)
            await _until_async(lambda: (task_id, "success") in seen)
        assert loops == {loop_thread}
        assert [status for tid, status in seen if tid == task_id] == ["processing", "success"]

    _run(main())


async def _until_async(predicate: object, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_constructor_checks_its_argument() -> None:
    with pytest.raises(taskengine.TaskValidationError, match="engine"):
        taskengine.AsyncTaskEngine("not an engine")  # type: ignore[arg-type]
