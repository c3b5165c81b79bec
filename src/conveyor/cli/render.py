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
    return seconds_text(((end or now()) - start).total_seconds())


def seconds_text(seconds: float) -> str:
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


def size_text(size: int | None) -> str:
    """Bytes as 512K, 212M, 1.5G."""
    if size is None:
        return ""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{size}B"


def run_table(run: RunRecord, status: str | None = None,
              usage: dict[str, dict] | None = None) -> Table:
    """`usage` is `Store.run_usage` of the run: CPU time and peak memory of each task's last
    attempt, and GPU memory where it was measured."""
    status = status or run.status
    usage = usage or {}
    gpu = any(u["gpu_memory"] is not None for u in usage.values())
    title = Text.assemble(f"run {run.id} · {run.pipeline} · ", status_text(status))
    table = Table(title=title, title_justify="left", expand=False)
    columns = ["task", "status", "tries", "exit", "time", "cpu", "peak mem",
               *(["gpu mem"] if gpu else []), "resources", "note"]
    for column in columns:
        table.add_column(column, no_wrap=column != "note",
                         justify="right" if column in ("cpu", "peak mem", "gpu mem") else "left")
    for task in run.tasks:
        used = usage.get(task.name)
        measured = ["", "", ""]
        if used:
            measured = [seconds_text(used["cpu_seconds"]), size_text(used["peak_memory"]),
                        size_text(used["gpu_memory"])]
        table.add_row(
            task.name,
            status_text(task.status),
            str(task.attempts or ""),
            "" if task.exit_code is None else str(task.exit_code),
            duration(task.started_at, task.finished_at),
            *measured[:3 if gpu else 2],
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
