"""/api/runs: start runs of registered pipelines, watch them live, read logs and artifacts.

A run started here executes in an engine process of its own (as `conveyor run --detach`),
so it survives a restart of the server and shows in the CLI as any other run.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import yaml
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from conveyor.pipelines import runs as run_files
from conveyor.pipelines.scheduler import RunEngine
from conveyor.pipelines.state import RunStatus, TaskStatus
from conveyor.processes import owner_is_alive
from conveyor.server.deps import SettingsDep, StoreDep
from conveyor.server.errors import ApiError
from conveyor.settings import Settings
from conveyor.store.repository import RunRecord, Store

router = APIRouter(tags=["runs"])
WATCH_EVERY = 0.5  # seconds between looks at the store for a live stream
KEEPALIVE_EVERY = 15.0  # seconds: a comment line keeps proxies from closing a quiet stream
IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
TEXTS = {".txt", ".log", ".json", ".jsonl", ".csv", ".md", ".yaml", ".yml"}


class RunRequest(BaseModel):
    pipeline: str
    skip: list[str] = Field(default_factory=list)
    only: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    executor: str | None = Field(default=None, description="local or ray; default: the"
                                 " server's CONVEYOR_EXECUTOR")
    ray_address: str | None = None


@router.post("/runs", status_code=201)
def start_run(body: RunRequest, store: StoreDep, settings: SettingsDep) -> dict:
    run_id = run_files.start_registered_run(
        store, settings, body.pipeline, skip=body.skip, only=body.only, env=body.env,
        started_by="api", executor=body.executor, ray_address=body.ray_address)
    return describe(store, store.get_run(run_id))


@router.get("/runs")
def list_runs(store: StoreDep, pipeline: str | None = None, status: str | None = None,
              limit: int = 50) -> list[dict]:
    stored = "running" if status == "interrupted" else status
    records = store.list_runs(limit=max(1, min(limit, 1000)), pipeline=pipeline, status=stored)
    found = [summary(r) for r in records]
    return [r for r in found if status is None or r["status"] == status]


@router.get("/runs/{run_id}")
def get_run(run_id: str, store: StoreDep) -> dict:
    return describe(store, store.get_run(run_id))


@router.post("/runs/{run_id}/cancel", status_code=202)
def cancel(run_id: str, store: StoreDep, settings: SettingsDep) -> dict:
    record = store.get_run(run_id)
    if not RunStatus(record.status).finished:
        if record.owner and owner_is_alive(record.owner) is not False:
            store.request_cancel(record.id)  # its engine stops the tasks
        else:
            RunEngine(store, settings, record.id).cancel_abandoned()
    return describe(store, store.get_run(record.id))


@router.post("/runs/{run_id}/resume", status_code=202)
def resume(run_id: str, store: StoreDep, settings: SettingsDep) -> dict:
    record = store.get_run(run_id)
    if record.status == RunStatus.SUCCEEDED:
        raise ApiError(409, f"run {record.id} succeeded; there is nothing to resume", "run")
    if record.owner and owner_is_alive(record.owner):
        raise ApiError(409, f"run {record.id} is still running", "run")
    # pending at once, so that the answer and a stream opened now see the run move on
    store.set_run_status(record.id, RunStatus.PENDING, "resumed")
    run_files.start_detached(settings, record.id)
    return describe(store, store.get_run(record.id))


@router.get("/runs/{run_id}/events")
async def run_events(run_id: str, request: Request, store: StoreDep) -> StreamingResponse:
    """The run as JSON each time it changes, until it has finished."""
    first = await run_in_threadpool(store.get_run, run_id)
    last = None

    async def look() -> tuple[list[str], bool]:
        nonlocal last
        current = await run_in_threadpool(lambda: describe(store, store.get_run(first.id)))
        text = json.dumps(current)
        if text == last:
            return [], False
        last = text
        finished = current["status"] in ("succeeded", "failed", "cancelled", "interrupted")
        return [f"event: run\ndata: {text}\n\n"], finished

    return _event_stream(_watch(request, look))


@router.get("/runs/{run_id}/tasks/{task}/logs")
def task_logs(run_id: str, task: str, store: StoreDep, after: int = 0,
              attempt: int | None = None) -> dict:
    record = store.get_run(run_id)
    status = record.task(task).status
    lines = store.read_logs(record.id, task, after_id=after, attempt=attempt)
    return {"lines": [_line(line) for line in lines],
            "finished": TaskStatus(status).finished and len(lines) < 5000}


@router.get("/runs/{run_id}/tasks/{task}/logs/stream")
async def task_log_stream(run_id: str, task: str, request: Request, store: StoreDep,
                          after: int = 0) -> StreamingResponse:
    """Lines as they are written; `end` once the task has finished and all are sent."""
    record = await run_in_threadpool(store.get_run, run_id)
    record.task(task)
    last_id = after

    async def look() -> tuple[list[str], bool]:
        nonlocal last_id
        batch = await run_in_threadpool(store.read_logs, record.id, task, last_id)
        if batch:
            last_id = batch[-1].id
            return [f"event: line\nid: {line.id}\ndata: {json.dumps(_line(line))}\n\n"
                    for line in batch], False
        current = await run_in_threadpool(store.get_run, record.id)
        status = current.task(task).status
        if not (TaskStatus(status).finished or RunStatus(current.status).finished):
            return [], False
        if await run_in_threadpool(store.read_logs, record.id, task, last_id):
            return [], False  # lines written just before the end: the next look sends them
        return [f"event: end\ndata: {json.dumps({'status': status})}\n\n"], True

    return _event_stream(_watch(request, look))


@router.get("/runs/{run_id}/tasks/{task}/artifacts")
def artifacts(run_id: str, task: str, store: StoreDep, settings: SettingsDep) -> list[dict]:
    folder = _output_folder(store, settings, run_id, task)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _inside(path, folder):
            stat = path.stat()
            found.append({"path": path.relative_to(folder).as_posix(), "size": stat.st_size,
                          "modified": stat.st_mtime, "kind": _kind(path)})
    return found


@router.get("/runs/{run_id}/tasks/{task}/artifacts/{path:path}")
def artifact(run_id: str, task: str, path: str, store: StoreDep,
             settings: SettingsDep) -> FileResponse:
    folder = _output_folder(store, settings, run_id, task)
    file = folder / path
    if not (file.is_file() and _inside(file, folder)):
        raise ApiError(404, f"task {task} of run {run_id} wrote no file {path!r}", "path")
    media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    inline = _kind(file) in ("image", "html", "text")
    if _kind(file) == "text":
        media = "text/plain; charset=utf-8"
    # a report's scripts must not act on this origin: the browser sandboxes what it shows
    return FileResponse(file, media_type=media, filename=file.name,
                        content_disposition_type="inline" if inline else "attachment",
                        headers={"Content-Security-Policy": "sandbox"})


def summary(run: RunRecord) -> dict:
    return run_files.run_summary_json(run)


def describe(store: Store, run: RunRecord) -> dict:
    return dict(run_files.run_as_json(run, store.run_usage(run.id)),
                dependencies=_dependencies(run.spec_text),
                options={k: run.options.get(k) for k in ("skip", "only", "env")})


def _dependencies(spec_text: str) -> dict[str, list[str]]:
    data = yaml.safe_load(spec_text)
    return {t["name"]: list(t.get("dependencies") or []) for t in data["tasks"]}


def _line(line) -> dict:
    return {"id": line.id, "attempt": line.attempt, "rank": line.rank, "stream": line.stream,
            "at": line.at, "text": line.text}


async def _watch(request: Request,
                 look: Callable[[], Awaitable[tuple[list[str], bool]]]) -> AsyncIterator[str]:
    """Server-sent events from looking at the store: what `look` finds is sent at once and
    looked for again without a pause; otherwise look again after WATCH_EVERY, with a comment
    line now and then to keep a quiet stream open, until `look` says done or the client goes."""
    quiet_since = time.monotonic()
    while not await request.is_disconnected():
        events, done = await look()
        for event in events:
            yield event
        if done:
            return
        if events:
            quiet_since = time.monotonic()
            continue
        if time.monotonic() - quiet_since > KEEPALIVE_EVERY:
            quiet_since = time.monotonic()
            yield ": still watching\n\n"
        await asyncio.sleep(WATCH_EVERY)


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _output_folder(store: Store, settings: Settings, run_id: str, task: str) -> Path:
    record = store.get_run(run_id)
    record.task(task)
    return settings.runs_root / record.id / "outputs" / task


def _inside(path: Path, folder: Path) -> bool:
    """No path escapes the task's folder: not by `..`, not by a link."""
    return path.resolve().is_relative_to(folder.resolve())


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGES:
        return "image"
    if suffix in (".html", ".htm"):
        return "html"
    return "text" if suffix in TEXTS else "other"
