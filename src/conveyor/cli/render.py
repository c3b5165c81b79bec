"""Tables and colours for runs and tasks."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table
from rich.text import Text

from conveyor.store.repository import RunRecord, TaskRecord, now

STATUS_STYLE = {
    "pending": "yellow",
    "waiting": "dark_goldenrod",
    "running": "sky_blue1",
    "skipped": "pink1",
    "succeeded": "green",
    "failed": "red",
    "upstream_failed": "red3",
    "cancelled": "grey50",
    "interrupted": "magenta",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or now()) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def resources_text(task: TaskRecord) -> str:
    given = task.resources
    if not given:
        return ""
    parts = [f"cpu {given['cpu']:g}"]
    if given.get("mem") not in (None, "0"):
        parts.append(f"mem {given['mem']}")
    gpus = given.get("gpus") or []
    if gpus:
        parts.append("gpu " + ",".join(f"{g['index']}:{g['share']:g}" for g in gpus))
    if given.get("nodes"):
        parts.append(f"x{len(given['nodes'])} nodes")
    return " ".join(parts)


def run_table(run: RunRecord, status: str | None = None) -> Table:
    status = status or run.status
    title = Text.assemble(f"run {run.id} · {run.pipeline} · ", status_text(status))
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("task", "status", "tries", "exit", "time", "resources", "note"):
        table.add_column(column, no_wrap=column != "note")
    for task in run.tasks:
        table.add_row(
            task.name,
            status_text(task.status),
            str(task.attempts or ""),
            "" if task.exit_code is None else str(task.exit_code),
            duration(task.started_at, task.finished_at),
            resources_text(task),
            Text(task.message or "", style="dim"),
        )
    return table


def runs_table(runs: list[RunRecord], statuses: list[str]) -> Table:
    table = Table(title="runs, newest first", title_justify="left")
    for column in ("id", "pipeline", "status", "started", "time"):
        table.add_column(column, no_wrap=True)
    for run, status in zip(runs, statuses, strict=True):
        started = run.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if run.started_at else ""
        table.add_row(run.id, run.pipeline, status_text(status), started,
                      duration(run.started_at, run.finished_at))
    return table
