"""/api/pipelines: register pipeline files, read them, edit their tasks, validate YAML.

Edits through the task form rewrite the YAML from its parsed form (comments are not kept);
edits of the YAML text itself are stored as written. Every change is validated first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from conveyor.errors import SpecError
from conveyor.pipelines.spec import Pipeline, parse_pipeline
from conveyor.server.deps import SettingsDep, StoreDep
from conveyor.server.errors import ApiError, problem_of
from conveyor.settings import Settings
from conveyor.store.pipelines import PipelineRecord
from conveyor.store.repository import Store

router = APIRouter(tags=["pipelines"])


class Registration(BaseModel):
    yaml: str | None = Field(default=None, description="The pipeline's YAML text.")
    path: str | None = Field(default=None, description="A pipeline file on the server.")
    directory: str | None = Field(default=None, description="Where its runs start (relative"
                                  " paths); default: the file's folder, or one of its own.")
    replace: bool = False


class YamlBody(BaseModel):
    yaml: str


class TaskBody(BaseModel):
    task: dict[str, Any]


class DuplicateBody(BaseModel):
    name: str | None = None


@router.get("/pipelines")
def list_pipelines(store: StoreDep) -> list[dict]:
    summaries = []
    for record in store.list_pipelines():
        data = _yaml_of(record.spec_text)
        summaries.append({
            "name": record.name, "description": data.get("description") or "",
            "tasks": len(data.get("tasks") or []), "source": record.source,
            "directory": record.directory, "updated_at": record.updated_at.isoformat(),
            "last_run": _iso_times(store.last_run_of(record.name)),
        })
    return summaries


@router.post("/pipelines", status_code=201)
def register(body: Registration, store: StoreDep, settings: SettingsDep) -> dict:
    if (body.yaml is None) == (body.path is None):
        raise ApiError(400, "send either `yaml` (the text) or `path` (a file on the server)",
                       "yaml")
    if body.path is not None:
        source = Path(body.path).expanduser().absolute()
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ApiError(400, f"{source}: cannot be read: {err}", "path") from None
        pipeline = parse_pipeline(text, str(source), settings.capacity)
        directory = Path(body.directory or source.parent)
    else:
        text, source = body.yaml, None
        pipeline = parse_pipeline(text, "pipeline.yaml", settings.capacity)
        directory = Path(body.directory or settings.home / "pipelines" / pipeline.name)
    if not directory.is_dir():
        if body.directory:
            raise ApiError(400, f"{directory} is not a folder on the server", "directory")
        directory.mkdir(parents=True)
    saved = store.save_pipeline(pipeline.name, text, str(directory),
                                str(source) if source else None, body.replace)
    if not saved:
        raise ApiError(409, f"a pipeline named {pipeline.name!r} is registered already; send"
                       " `replace: true` to overwrite it, or rename this one", "name")
    return _describe(store.get_pipeline(pipeline.name))


@router.post("/pipelines/validate")
def validate(body: YamlBody, settings: SettingsDep) -> dict:
    try:
        pipeline = parse_pipeline(body.yaml, "pipeline.yaml", settings.capacity)
    except SpecError as err:
        return {"ok": False, "problems": [problem_of(p) for p in err.problems]}
    return {"ok": True, "problems": [], "pipeline": pipeline.name}


@router.get("/pipelines/{name}")
def get_pipeline(name: str, store: StoreDep) -> dict:
    return _describe(store.get_pipeline(name))


@router.put("/pipelines/{name}")
def update(name: str, body: YamlBody, store: StoreDep, settings: SettingsDep) -> dict:
    record = store.get_pipeline(name)
    _save(store, settings, record, body.yaml)
    return _describe(store.get_pipeline(name))


@router.delete("/pipelines/{name}", status_code=204)
def delete(name: str, store: StoreDep) -> Response:
    store.delete_pipeline(name)
    return Response(status_code=204)


@router.post("/pipelines/{name}/tasks", status_code=201)
def add_task(name: str, body: TaskBody, store: StoreDep, settings: SettingsDep) -> dict:
    record = store.get_pipeline(name)
    data = _yaml_of(record.spec_text)
    new_name = body.task.get("name")
    if any(t.get("name") == new_name for t in data["tasks"]):
        raise ApiError(409, f"the pipeline has a task {new_name!r} already", "task.name")
    data["tasks"].append(body.task)
    return _save_data(store, settings, record, data)


@router.put("/pipelines/{name}/tasks/{task}")
def edit_task(name: str, task: str, body: TaskBody, store: StoreDep,
              settings: SettingsDep) -> dict:
    record = store.get_pipeline(name)
    data = _yaml_of(record.spec_text)
    index = _index_of(data, task)
    new_name = body.task.get("name", task)
    if new_name != task:
        if any(t.get("name") == new_name for t in data["tasks"]):
            raise ApiError(409, f"the pipeline has a task {new_name!r} already", "task.name")
        for other in data["tasks"]:  # a rename follows into the dependencies
            deps = other.get("dependencies") or []
            other_deps = [new_name if dep == task else dep for dep in deps]
            if deps:
                other["dependencies"] = other_deps
    data["tasks"][index] = body.task
    return _save_data(store, settings, record, data)


@router.post("/pipelines/{name}/tasks/{task}/duplicate", status_code=201)
def duplicate_task(name: str, task: str, body: DuplicateBody, store: StoreDep,
                   settings: SettingsDep) -> dict:
    record = store.get_pipeline(name)
    data = _yaml_of(record.spec_text)
    index = _index_of(data, task)
    taken = {t.get("name") for t in data["tasks"]}
    new_name = body.name or _free_name(f"{task}-copy", taken)
    if new_name in taken:
        raise ApiError(409, f"the pipeline has a task {new_name!r} already", "name")
    copy = dict(data["tasks"][index], name=new_name)
    data["tasks"].insert(index + 1, copy)
    return _save_data(store, settings, record, data)


@router.delete("/pipelines/{name}/tasks/{task}")
def delete_task(name: str, task: str, store: StoreDep, settings: SettingsDep) -> dict:
    record = store.get_pipeline(name)
    data = _yaml_of(record.spec_text)
    del data["tasks"][_index_of(data, task)]
    if not data["tasks"]:
        raise ApiError(400, "a pipeline needs at least one task; delete the pipeline instead",
                       "task")
    for other in data["tasks"]:
        if task in (other.get("dependencies") or []):
            other["dependencies"] = [dep for dep in other["dependencies"] if dep != task]
    return _save_data(store, settings, record, data)


@router.get("/pipelines/{name}/usage")
def usage(name: str, store: StoreDep) -> dict:
    from conveyor.server.api.runs import summary

    store.get_pipeline(name)
    runs = store.list_runs(limit=1000, pipeline=name)
    outcomes: dict[str, int] = {}
    for run in runs:
        outcomes[run.status] = outcomes.get(run.status, 0) + 1
    return {
        "pipeline": name,
        "runs": len(runs),
        "outcomes": outcomes,
        "history": [summary(run) for run in reversed(runs[:100])],
        "tasks": store.pipeline_task_usage(name),
    }


def _describe(record: PipelineRecord) -> dict:
    data = _yaml_of(record.spec_text)
    tasks = data.get("tasks") or []
    return {
        "name": record.name, "description": data.get("description") or "",
        "yaml": record.spec_text, "source": record.source, "directory": record.directory,
        "created_at": record.created_at.isoformat(), "updated_at": record.updated_at.isoformat(),
        "tasks": tasks,
        "dependencies": {t.get("name"): list(t.get("dependencies") or []) for t in tasks},
    }


def _yaml_of(text: str) -> dict:
    """The stored YAML as data; it was validated when saved."""
    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {"tasks": []}


def _index_of(data: dict, task: str) -> int:
    for index, item in enumerate(data.get("tasks") or []):
        if item.get("name") == task:
            return index
    raise ApiError(404, f"the pipeline has no task {task!r}", "task")


def _free_name(base: str, taken: set) -> str:
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def _save_data(store: Store, settings: Settings, record: PipelineRecord, data: dict) -> dict:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    _save(store, settings, record, text)
    return _describe(store.get_pipeline(record.name))


def _save(store: Store, settings: Settings, record: PipelineRecord, text: str) -> Pipeline:
    pipeline = parse_pipeline(text, "pipeline.yaml", settings.capacity)
    if pipeline.name != record.name:
        raise ApiError(400, f"the pipeline is registered as {record.name!r}; keep that name"
                       " (register a copy under a new name instead)", "name")
    store.update_pipeline_text(record.name, text)
    return pipeline


def _iso_times(row: dict | None) -> dict | None:
    return dict(row, created_at=row["created_at"].isoformat()) if row else None
