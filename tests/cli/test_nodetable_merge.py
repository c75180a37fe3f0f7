"""``nodetable.merge``: the pool figures of several PostgreSQL nodes, added up per task type."""

from __future__ import annotations

from taskengine.cli import nodetable


def _node(name: str, taken: str, **square: object) -> dict[str, object]:
    entry = {"type": "square", "isRegistered": True, **square}
    return {"nodeIdentity": name, "dateTaken": taken, "types": [entry]}


def test_nothing_published_is_none() -> None:
    assert nodetable.merge([]) is None


def test_figures_add_up_and_the_mean_is_weighted_by_attempts() -> None:
    merged = nodetable.merge(
        [
            _node("a", "2026-12-01T10:00:02.000Z", workersAlive=2, tasksDone=30, meanRunTime=1.0),
            _node("b", "2026-12-01T10:00:01.000Z", workersAlive=1, tasksDone=10, meanRunTime=3.0),
        ]
    )
    assert merged is not None
    [square] = merged["types"]
    assert square["workersAlive"] == 3
    assert square["tasksDone"] == 40
    assert square["meanRunTime"] == (30 * 1.0 + 10 * 3.0) / 40
    assert merged["nodeIdentity"] == "a, b"
    assert merged["dateTaken"] == "2026-12-01T10:00:01.000Z"  # the oldest snapshot


def test_unregistered_types_and_nodes_without_attempts() -> None:
    idle = _node("a", "2026-12-01T10:00:00.000Z", workersAlive=1, tasksDone=0, meanRunTime=None)
    other = {
        "nodeIdentity": "b",
        "dateTaken": "2026-12-01T10:00:00.000Z",
        "types": [{"type": "report", "isRegistered": False, "tasksDone": 5}],
    }
    merged = nodetable.merge([idle, other])
    assert merged is not None
    assert [entry["type"] for entry in merged["types"]] == ["square"]
    assert merged["types"][0]["meanRunTime"] is None
