"""The FastAPI example, driven by FastAPI's test client (which runs the app's lifespan)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from examples.fastapi_service import app as example

from ..conftest import until, worker_pids

PRIMES_BELOW_200K = 17_984


def test_submit_a_cpu_heavy_task_and_follow_its_status(tmp_path: Path) -> None:
    app = example.create_app(tmp_path / "tasks.db")
    with TestClient(app) as client:
        submitted = client.post("/primes", json={"limit": 200_000})
        assert submitted.status_code == 202
        task_id = submitted.json()["id"]
        assert submitted.json()["href"] == f"/tasks/{task_id}"

        first = client.get(f"/tasks/{task_id}")
        assert first.status_code == 200
        assert first.json()["status"] in ("pending", "processing", "success")

        def finished() -> dict[str, object] | None:
            body = client.get(f"/tasks/{task_id}", params={"wait": 5}).json()
            return body if body["status"] == "success" else None

        done = until(finished, timeout=120)
        assert done["result"] == PRIMES_BELOW_200K
        assert done["attempts"] == 1

        stats = client.get("/stats").json()
        [primes] = [entry for entry in stats["types"] if entry["type"] == "primes"]
        assert primes["success"] == 1
        assert primes["tasksDone"] == 1
        assert stats["isDispatching"] is True

        assert client.get(f"/tasks/{'0' * 32}").status_code == 404
        assert client.post("/primes", json={"limit": 1}).status_code == 422
    # Leaving the client ran the lifespan's shutdown: the engine stopped its workers.
    until(lambda: not worker_pids(), timeout=15)
