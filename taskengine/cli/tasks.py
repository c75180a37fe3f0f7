"""``taskengine tasks list|show|retry|cancel|remove|purge``: see and fix the task table.

These commands use an engine that is never started (``common.offline_engine``): no dispatch
lock, no workers, so they are safe next to a running ``taskengine worker``.  Listings show
metadata only; ``show`` and ``--json`` decode payloads and results, which unpickles them: run
them only on a store you trust (docs/explanation/security.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import taskengine
from taskengine.cli import common
from taskengine.core import models
from taskengine.stores import base

__all__ = ["add_parser"]

_SORTS = ("date_created", "date_modified", "date_completed", "status")
_FINAL = tuple(s.value for s in models.TaskStatus if s.is_final)


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``tasks`` and its sub-commands."""
    parser = commands.add_parser(
        "tasks",
        parents=[shared],
        help="list, show, retry, cancel, remove or purge tasks",
        description="See and fix the task table without starting dispatch.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    common_parent = argparse.ArgumentParser(add_help=False, parents=[shared])
    common.add_store_option(common_parent)
    common_parent.add_argument(
        "--json", action="store_true", help="print JSON (tasks in the TWIN JSON form)"
    )

    listing = actions.add_parser(
        "list",
        parents=[common_parent],
        help="one page of tasks, filtered and sorted like engine.query()",
        description="Print one page of tasks (or every page with --all) in a stable order; "
        "the cursor printed at the end fetches the next page.",
    )
    _filters(listing)
    listing.add_argument("--sort", choices=_SORTS, default="date_created", help="sort field")
    listing.add_argument(
        "--direction", choices=("asc", "desc"), default="asc", help="sort direction"
    )
    listing.add_argument("--cursor", help="continue after the page that printed this cursor")
    listing.add_argument("--page-size", type=int, default=20, help="tasks per page (1..1000)")
    listing.add_argument("--all", action="store_true", help="follow the cursor to the end")
    listing.set_defaults(run=_list)

    show = actions.add_parser(
        "show",
        parents=[common_parent],
        help="every field of one task",
        description="Print every field of one task, payload and result included.",
    )
    show.add_argument("task_id", metavar="TASK_ID")
    show.set_defaults(run=_show)

    for name, verb, text in (
        ("retry", "retried", "run waiting pending tasks now, or revive failed ones"),
        ("cancel", "cancelled", "cancel pending tasks (processing ones with --terminate)"),
        ("remove", "removed", "delete tasks whatever their status"),
    ):
        action = actions.add_parser(
            name,
            parents=[common_parent],
            help=text,
            description=f"{text[0].upper()}{text[1:]}.  Exit status 1 when any id was not "
            f"{verb} (unknown id, or a status the action does not apply to).",
        )
        action.add_argument("task_ids", nargs="+", metavar="TASK_ID")
        if name == "cancel":
            action.add_argument(
                "--terminate",
                action="store_true",
                help="also cancel processing tasks (their running attempt's outcome is discarded)",
            )
        action.set_defaults(run=_act, verb=verb)

    purge = actions.add_parser(
        "purge",
        parents=[common_parent],
        help="delete finished tasks (success, failed, cancelled) matching filters",
        description="Delete finished tasks: those in status success, failed or cancelled (or "
        "only --status), of --type if given, finished before --finished-before or more than "
        "--older-than seconds ago if given.  Pending and processing tasks are never touched; "
        "each delete applies only if the task is still in the status it was listed with.  "
        "Needs --yes; --dry-run only counts.",
    )
    purge.add_argument("--type", dest="task_type", help="only tasks of this type")
    purge.add_argument("--status", choices=_FINAL, help="only tasks in this final status")
    when = purge.add_mutually_exclusive_group()
    when.add_argument(
        "--older-than", type=float, metavar="SECONDS", help="finished at least this long ago"
    )
    when.add_argument(
        "--finished-before", metavar="ISO_DATE", help="finished before this ISO-8601 date"
    )
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.set_defaults(run=_purge)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="task_type", help="only tasks of this type")
    parser.add_argument(
        "--status", choices=[s.value for s in models.TaskStatus], help="only tasks in this status"
    )


def _date(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _list(args: argparse.Namespace) -> int:
    engine = common.offline_engine(common.store_url(args.store))
    try:
        tasks: list[models.BackgroundTask] = []
        cursor = args.cursor
        while True:
            page = engine.query(
                args.task_type, args.status, args.sort, args.direction, cursor, args.page_size
            )
            tasks.extend(page.entities)
            cursor = page.cursor
            if not args.all or cursor is None:
                break
    finally:
        engine.stop()
    if args.json:
        common.print_json(
            {"entities": [common.task_json(task) for task in tasks], "cursor": cursor}
        )
        return common.EXIT_OK
    table = common.table(title=f"{len(tasks)} task(s)", title_justify="left")
    for column in ("id", "type", "status", "attempts", "created", "modified", "error"):
        table.add_column(column, no_wrap=column in ("id", "created", "modified"))
    for task in tasks:
        table.add_row(
            task.id,
            task.type,
            task.status.value,
            str(task.attempts),
            _date(task.date_created),
            _date(task.date_modified),
            "" if task.error is None else f"{task.error.type}: {task.error.message}"[:60],
        )
    out = common.console()
    out.print(table)
    if cursor is not None:
        out.print(f"next page: --cursor {cursor}")
    return common.EXIT_OK


def _show(args: argparse.Namespace) -> int:
    engine = common.offline_engine(common.store_url(args.store))
    try:
        task = engine.get(args.task_id)
    finally:
        engine.stop()
    if task is None:
        raise common.CliError(f"no task with id {args.task_id}")
    data = common.task_json(task)
    if args.json:
        common.print_json(data)
        return common.EXIT_OK
    table = common.table(show_header=False, title=f"task {task.id}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if key == "error" and task.error is not None:
            value = f"{task.error.type}: {task.error.message}"
        table.add_row(key, "null" if value is None else str(value))
    common.console().print(table)
    return common.EXIT_OK


def _act(args: argparse.Namespace) -> int:
    engine = common.offline_engine(common.store_url(args.store))
    outcomes: list[dict[str, Any]] = []
    try:
        for task_id in args.task_ids:
            if args.verb == "retried":
                done = engine.retry(task_id)
            elif args.verb == "cancelled":
                done = engine.cancel(task_id, terminate=args.terminate)
            else:
                done = engine.remove(task_id)
            after = engine.get(task_id)
            outcomes.append(
                {
                    "id": task_id,
                    "changed": done,
                    "task": None if after is None else common.task_json(after),
                    "status": None if after is None else after.status.value,
                }
            )
    finally:
        engine.stop()
    if args.json:
        common.print_json([{k: v for k, v in o.items() if k != "status"} for o in outcomes])
    else:
        for outcome in outcomes:
            if outcome["changed"]:
                print(f"{outcome['id']}: {args.verb}")
            elif outcome["status"] is None:
                print(f"{outcome['id']}: not {args.verb} (no such task)")
            else:
                print(f"{outcome['id']}: not {args.verb} (status {outcome['status']})")
    failed = any(not outcome["changed"] for outcome in outcomes)
    return common.EXIT_FAILURE if failed else common.EXIT_OK


def _finished_at(task: models.BackgroundTask) -> datetime:
    return task.date_completed or task.date_cancelled or task.date_modified


def _cutoff(args: argparse.Namespace, now: datetime) -> datetime | None:
    if args.older_than is not None:
        if not args.older_than >= 0:
            raise common.CliError("--older-than must be seconds >= 0", common.EXIT_USAGE)
        return now - timedelta(seconds=args.older_than)
    if args.finished_before is not None:
        try:
            moment = datetime.fromisoformat(args.finished_before)
        except ValueError as exc:
            raise common.CliError(
                f"--finished-before: not an ISO-8601 date: {args.finished_before!r}",
                common.EXIT_USAGE,
            ) from exc
        if moment.tzinfo is None:
            raise common.CliError(
                "--finished-before needs a time zone, e.g. 2030-01-02T00:00:00+00:00",
                common.EXIT_USAGE,
            )
        return moment
    return None


def _finished_tasks(
    engine: taskengine.TaskEngine, task_type: str | None, statuses: tuple[str, ...]
) -> Iterator[models.BackgroundTask]:
    for status in statuses:
        cursor = None
        while True:
            page = engine.query(task_type, status, cursor=cursor, page_size=1000)
            yield from page.entities
            cursor = page.cursor
            if cursor is None:
                break


def _purge(args: argparse.Namespace) -> int:
    if not (args.yes or args.dry_run):
        raise common.CliError(
            "purge deletes finished tasks: pass --yes to delete them, or --dry-run to count",
            common.EXIT_USAGE,
        )
    statuses = (args.status,) if args.status else _FINAL
    engine = common.offline_engine(common.store_url(args.store))
    try:
        cutoff = _cutoff(args, datetime.now().astimezone())
        chosen = [
            task
            for task in _finished_tasks(engine, args.task_type, statuses)
            if cutoff is None or _finished_at(task) < cutoff
        ]
        deleted = 0
        if not args.dry_run:
            # Fenced like every delete: a task revived (retry) since it was listed is kept.
            for start in range(0, len(chosen), 500):
                writes: list[base.Write] = [
                    base.Delete(
                        task_id=t.id, expected_status=t.status, expected_attempts=t.attempts
                    )
                    for t in chosen[start : start + 500]
                ]
                deleted += sum(engine.store.apply(writes))
    finally:
        engine.stop()
    what = "/".join(statuses) + (
        f" tasks of type {args.task_type!r}" if args.task_type else " tasks"
    )
    if args.json:
        common.print_json(
            {"matched": len(chosen), "deleted": deleted, "dryRun": bool(args.dry_run)}
        )
    elif args.dry_run:
        print(f"would delete {len(chosen)} {what} (dry run: nothing deleted)")
    else:
        print(f"deleted {deleted} of {len(chosen)} matching {what}")
    return common.EXIT_OK
