"""`conveyor schedule add/list/remove` and `conveyor notify add/list/remove`.

Both write to the store directly; a running `conveyor server` (on the same store) starts the
scheduled runs and sends the webhooks.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from conveyor.server.notify import new_notification, notification_json
from conveyor.server.scheduler import new_schedule, schedule_json
from conveyor.settings import load_settings
from conveyor.store.repository import Store

console = Console(highlight=False)

schedule_app = typer.Typer(help="Run registered pipelines on a cron schedule.",
                           no_args_is_help=True)
notify_app = typer.Typer(help="Call a webhook (plain JSON or Slack) when a pipeline's runs"
                              " finish.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
PipelineOption = Annotated[str | None, typer.Option(help="Only this pipeline's.")]
SERVER_NOTE = "`conveyor server` acts on it while it runs"


class Outcome(StrEnum):
    success = "success"
    failure = "failure"


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
    app.add_typer(notify_app, name="notify")


def _store() -> Store:
    return Store(load_settings().db_url)


@schedule_app.command("add")
def add_schedule(
    pipeline: Annotated[str, typer.Argument(help="A registered pipeline's name.")],
    cron: Annotated[str, typer.Argument(help='Five fields, e.g. "0 3 * * *" (03:00 daily).')],
    skip: Annotated[list[str], typer.Option(help="Skip this task in each run (repeatable).")] = [],
    timezone: Annotated[str, typer.Option(help="The zone the cron reads in, e.g."
                                          " Asia/Seoul.")] = "UTC",
    as_json: JsonOption = False,
) -> None:
    """Start a run of a registered pipeline at each cron tick."""
    settings = load_settings()
    record = new_schedule(Store(settings.db_url), settings, pipeline, cron, timezone, skip)
    if as_json:
        console.print_json(json.dumps(schedule_json(record)))
        return
    console.print(f"schedule {record.id}: {pipeline} at {cron!r} ({timezone}), first run"
                  f" {record.next_due:%Y-%m-%d %H:%M} UTC; {SERVER_NOTE}", markup=False)


@schedule_app.command("list")
def list_schedules(pipeline: PipelineOption = None, as_json: JsonOption = False) -> None:
    """List schedules and when each runs next."""
    records = _store().list_schedules(pipeline)
    if as_json:
        console.print_json(json.dumps([schedule_json(r) for r in records]))
        return
    table = Table("id", "pipeline", "cron", "timezone", "skip", "next (UTC)")
    for r in records:
        table.add_row(str(r.id), r.pipeline, r.cron, r.timezone, ", ".join(r.skip),
                      f"{r.next_due:%Y-%m-%d %H:%M}" if r.enabled else "disabled")
    console.print(table)


@schedule_app.command("remove")
def remove_schedule(schedule_id: Annotated[int, typer.Argument(help="The schedule's id.")]) -> None:
    """Remove a schedule; the runs it started stay."""
    _store().delete_schedule(schedule_id)
    console.print(f"schedule {schedule_id} removed", markup=False)


@notify_app.command("add")
def add_notification(
    pipeline: Annotated[str, typer.Argument(help="A registered pipeline's name.")],
    url: Annotated[str, typer.Argument(help="The webhook's http(s) address.")],
    on: Annotated[list[Outcome], typer.Option(help="Which finished runs to tell about"
                                              " (repeatable; default both).")] = [],
    slack: Annotated[bool, typer.Option(help="Send Slack's message format.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Call a webhook when a run of the pipeline succeeds or fails (cancelled runs: never)."""
    chosen = set(on) or {Outcome.success, Outcome.failure}
    record = new_notification(_store(), pipeline, url, Outcome.success in chosen,
                              Outcome.failure in chosen, slack)
    shown = notification_json(record)
    if as_json:
        console.print_json(json.dumps(shown))
        return
    console.print(f"notification {record.id}: {pipeline} → {shown['url']} on"
                  f" {' and '.join(sorted(chosen))}; {SERVER_NOTE}", markup=False)


@notify_app.command("list")
def list_notifications(pipeline: PipelineOption = None, as_json: JsonOption = False) -> None:
    """List webhooks (addresses shown as scheme and host: the rest may be a secret)."""
    shown = [notification_json(r) for r in _store().list_notifications(pipeline)]
    if as_json:
        console.print_json(json.dumps(shown))
        return
    table = Table("id", "pipeline", "url", "on", "format")
    for n in shown:
        on = [name for name, wanted in (("success", n["on_success"]),
                                        ("failure", n["on_failure"])) if wanted]
        table.add_row(str(n["id"]), n["pipeline"], n["url"], ", ".join(on),
                      "slack" if n["slack"] else "json")
    console.print(table)


@notify_app.command("remove")
def remove_notification(
    notification_id: Annotated[int, typer.Argument(help="The notification's id.")],
) -> None:
    """Remove a webhook and its delivery records."""
    _store().delete_notification(notification_id)
    console.print(f"notification {notification_id} removed", markup=False)
