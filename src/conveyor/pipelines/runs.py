"""Creating runs from pipeline files, starting their engine in the background, describing them."""

from __future__ import annotations

import os
import time
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from conveyor.errors import UsageError
from conveyor.executors.placement import check_executor
from conveyor.pipelines.spec import Pipeline, parse_pipeline, read_pipeline_text
from conveyor.pipelines.state import TaskStatus
from conveyor.processes import owner_is_alive
from conveyor.settings import Settings
from conveyor.store.repository import RunRecord, Store


def create_run(store: Store, settings: Settings, path: str | Path, **options) -> str:
    """Check the file and the options (those of `create_run_from_text`), then record a pending
    run; returns its id."""
    path = Path(path).absolute()
    return create_run_from_text(store, settings, read_pipeline_text(path), path, **options)


def create_run_from_text(
    store: Store,
    settings: Settings,
    text: str,
    path: Path,
    skip: list[str] = (),
    only: list[str] = (),
    env: dict[str, str] | None = None,
    started_by: str = "cli",
    executor: str = "local",
    ray_address: str | None = None,
) -> str:
    """A run of a pipeline's YAML whose relative paths start in `path`'s folder. Whether its
    tasks fit is checked against this machine here; on a cluster, by the executor per node."""
    check_executor(executor)
    local = executor == "local"
    pipeline = parse_pipeline(text, str(path), settings.capacity if local else None)
    names = [t.name for t in pipeline.tasks]
    for option, chosen in (("skip", skip), ("only", only)):
        unknown = [name for name in chosen if name not in names]
        if unknown:
            raise UsageError(
                f"--{option} {', '.join(unknown)}: no such task in {path.name};"
                f" its tasks: {', '.join(names)}"
            )
    return store.create_run(
        pipeline=pipeline.name,
        pipeline_file=str(path),
        spec_text=text,
        options={"skip": list(skip), "only": list(only), "env": dict(env or {}),
                 "started_by": started_by, "executor": executor, "ray_address": ray_address},
        task_statuses=initial_statuses(pipeline, skip, only),
    )


def start_registered_run(
    store: Store,
    settings: Settings,
    name: str,
    *,
    skip: list[str] = (),
    only: list[str] = (),
    env: dict[str, str] | None = None,
    started_by: str,
    executor: str | None = None,
    ray_address: str | None = None,
) -> str:
    """A run of a pipeline registered with the server, as registered now, started in an engine
    process of its own; the executor defaults to the settings' (CONVEYOR_EXECUTOR)."""
    record = store.get_pipeline(name)
    run_id = create_run_from_text(store, settings, record.spec_text, record.run_file, skip, only,
                                  env, started_by, executor or settings.executor,
                                  ray_address or settings.ray_address)
    start_detached(settings, run_id)
    return run_id


def initial_statuses(
    pipeline: Pipeline, skip: list[str], only: list[str]
) -> list[tuple[str, str, str | None]]:
    """Each task's first status and why: skipped by the file, by --skip, or by --only."""
    statuses = []
    for task in pipeline.tasks:
        if task.skip:
            statuses.append((task.name, TaskStatus.SKIPPED, "skip: true in the pipeline file"))
        elif task.name in skip:
            statuses.append((task.name, TaskStatus.SKIPPED, "skipped with --skip"))
        elif only and task.name not in only:
            statuses.append((task.name, TaskStatus.SKIPPED, "not chosen with --only"))
        else:
            statuses.append((task.name, TaskStatus.PENDING, None))
    return statuses


def parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {pair!r}: write it as NAME=value")
        env[key] = value
    return env


def start_detached(settings: Settings, run_id: str) -> Path:
    """Execute the run in a background process of its own; returns the engine's log file."""
    log_file = settings.runs_root / run_id / "engine.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "conveyor", "engine", run_id],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, CONVEYOR_HOME=str(settings.home)),
        )
    return log_file


def engine_state(run: RunRecord) -> str:
    """`running` while a live engine holds the run; `interrupted` if its engine died."""
    if run.status == "running" and (run.owner is None or owner_is_alive(run.owner) is False):
        return "interrupted"
    return run.status


def run_as_json(run: RunRecord, usage: dict[str, dict] | None = None) -> dict:
    """A run and its tasks; `usage` is `Store.run_usage` of the run (each task's last attempt)."""
    usage = usage or {}
    return dict(run_summary_json(run), tasks=[
        {
            "name": t.name,
            "status": t.status,
            "attempts": t.attempts,
            "exit_code": t.exit_code,
            "message": t.message,
            "started_at": _iso(t.started_at),
            "finished_at": _iso(t.finished_at),
            "duration": _duration(t.started_at, t.finished_at, t.status == "running"),
            "resources": t.resources,
            "usage": usage.get(t.name),
        }
        for t in run.tasks
    ])


def run_summary_json(run: RunRecord) -> dict:
    return {
        "id": run.id,
        "pipeline": run.pipeline,
        "status": engine_state(run),
        "message": run.message,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration": _duration(run.started_at, run.finished_at, run.status == "running"),
        "started_by": run.options.get("started_by"),
    }


def _duration(start: datetime | None, end: datetime | None, running: bool) -> float | None:
    """Seconds from start to end, or to now while it runs."""
    if start is None:
        return None
    if end is None:
        return round(time.time() - start.timestamp(), 3) if running else None
    return round((end - start).total_seconds(), 3)


def _iso(value) -> str | None:
    return value.isoformat() if value else None
