"""A FastAPI app that starts and stops a taskengine engine in its lifespan.

Run it with ``uvicorn examples.fastapi_service.app:app`` from the repository root (tasks are
kept in ``$EXAMPLE_TASKS_DB``, default ``example-tasks.db``), then::

    curl -X POST localhost:8000/primes -H 'content-type: application/json' -d '{"limit": 300000}'
    curl localhost:8000/tasks/<id>

The endpoint only stores the task and answers 202 at once; the counting runs in a worker
process, so the event loop stays free.  ``GET /tasks/{id}?wait=5`` waits up to 5 seconds for the
task to finish, without holding a thread (``AsyncTaskEngine.wait``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

import taskengine

HANDLERS = f"{__package__}.handlers" if __package__ else "handlers"


class PrimesRequest(BaseModel):
    """Count the primes below ``limit``."""

    limit: int = Field(gt=2, le=20_000_000)


def _status(task: taskengine.BackgroundTask) -> dict[str, Any]:
    return {
        "id": task.id,
        "status": task.status.value,
        "progress": task.progress,
        "attempts": task.attempts,
        "result": task.result,
        "error": None if task.error is None else f"{task.error.type}: {task.error.message}",
    }


def create_app(database: Path, *, workers: int = 2) -> FastAPI:
    """The app, keeping its tasks in the SQLite file ``database``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = taskengine.AsyncTaskEngine(
            taskengine.TaskEngine(taskengine.SqliteStore(database), max_total_workers=workers)
        )
        await engine.register_handler("primes", HANDLERS, "count_primes", max_worker_count=workers)
        await engine.start()
        app.state.engine = engine
        try:
            yield
        finally:
            await engine.stop(timeout=10)

    app = FastAPI(title="taskengine example", lifespan=lifespan)

    def engine_of(request: Request) -> taskengine.AsyncTaskEngine:
        engine: taskengine.AsyncTaskEngine = request.app.state.engine
        return engine

    @app.post("/primes", status_code=202)
    async def submit(body: PrimesRequest, request: Request) -> dict[str, str]:
        task_id = await engine_of(request).create(
            "primes", {"limit": body.limit}, retain_for=3600, retry_count=2
        )
        return {"id": task_id, "status": "pending", "href": f"/tasks/{task_id}"}

    @app.get("/tasks/{task_id}")
    async def status(task_id: str, request: Request, wait: float = 0.0) -> dict[str, Any]:
        engine = engine_of(request)
        try:
            if wait > 0:
                try:
                    return _status(await engine.wait(task_id, timeout=min(wait, 30.0)))
                except TimeoutError:
                    pass  # not finished yet: report where it is
            task = await engine.get(task_id)
        except taskengine.TaskNotFoundError:
            task = None
        if task is None:
            raise HTTPException(status_code=404, detail=f"no task {task_id}")
        return _status(task)

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return (await engine_of(request).stats()).to_json()

    return app


app = create_app(Path(os.environ.get("EXAMPLE_TASKS_DB", "example-tasks.db")))
