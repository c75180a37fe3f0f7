"""``query`` over tasks that real workers finished (contract.md#engine)."""

from __future__ import annotations

import taskengine
from taskengine import TaskStatus

BASIC = "tests.handlers.basic"


def _finished_tasks(engine: taskengine.TaskEngine) -> dict[str, taskengine.BackgroundTask]:
    engine.register_handler("echo", BASIC, "echo", max_worker_count=2)
    engine.register_handler("fail", BASIC, "fail", max_worker_count=2)
    ids = engine.create_many("echo", list(range(14)), retain_for=None)
    ids += engine.create_many("fail", list(range(7)), retain_for=None, retry_count=0)
    return {task_id: engine.wait(task_id, timeout=30) for task_id in ids}


def _page_through(engine: taskengine.TaskEngine, **query: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = engine.query(**query, cursor=cursor)  # type: ignore[arg-type]
        assert len(page.entities) <= query.get("page_size", 20)  # type: ignore[operator]
        seen += [task.id for task in page.entities]
        cursor = page.cursor
        if cursor is None:
            return seen


def test_status_filter_over_finished_tasks(engine: taskengine.TaskEngine) -> None:
    finished = _finished_tasks(engine)
    succeeded = {t for t, task in finished.items() if task.status is TaskStatus.SUCCESS}
    failed = {t for t, task in finished.items() if task.status is TaskStatus.FAILED}
    assert len(succeeded) == 14
    assert len(failed) == 7
    assert set(_page_through(engine, status="success", page_size=1000)) == succeeded
    assert set(_page_through(engine, status=TaskStatus.FAILED, page_size=1000)) == failed
    assert _page_through(engine, status="pending") == []
    assert set(_page_through(engine, task_type="fail", status="success")) == set()
    stored = engine.query(status="failed", page_size=1000).entities
    assert all(task.error is not None and task.error.type == "ValueError" for task in stored)


def test_date_completed_descending_pages_match_a_sorted_reference(
    engine: taskengine.TaskEngine,
) -> None:
    finished = _finished_tasks(engine)
    reference = [
        task.id
        for task in sorted(
            finished.values(), key=lambda task: (task.date_completed, task.id), reverse=True
        )
    ]
    paged = _page_through(
        engine, sort_property="date_completed", sort_direction="desc", page_size=4
    )
    assert paged == reference
    ascending = _page_through(engine, sort_property="dateCompleted", page_size=5)
    assert ascending == reference[::-1]
    only_echo = _page_through(
        engine,
        task_type="echo",
        status="success",
        sort_property="date_completed",
        sort_direction="desc",
        page_size=3,
    )
    assert only_echo == [t for t in reference if finished[t].type == "echo"]


def test_unfinished_tasks_page_consistently_by_date_completed(
    engine: taskengine.TaskEngine,
) -> None:
    finished = _finished_tasks(engine)
    waiting = engine.create_many("unhandled", list(range(5)))  # date_completed is None
    everything = set(finished) | set(waiting)
    descending = _page_through(
        engine, sort_property="date_completed", sort_direction="desc", page_size=3
    )
    ascending = _page_through(engine, sort_property="date_completed", page_size=7)
    assert len(descending) == len(everything)
    assert set(descending) == everything
    assert descending == ascending[::-1]
    assert _page_through(engine, status="pending", page_size=2) == waiting
