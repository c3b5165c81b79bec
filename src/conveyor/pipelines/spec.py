"""The pipeline file: Backend.AI FastTrack's pipeline.yaml, loaded and checked before anything runs.

`load_pipeline` returns a `Pipeline` or raises `SpecError` with every problem
found, each as `file:line: field: message`.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conveyor.errors import SpecError
from conveyor.pipelines import graph
from conveyor.pipelines.resources import (
    Capacity,
    Request,
    parse_duration,
    parse_size,
    why_never_fits,
)
from conveyor.yaml_lines import LocatedDocument
from conveyor.yaml_models import line_number, load_document, validate

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _scalar_to_str(value: Any) -> Any:
    """YAML turns `1` and `true` into numbers and booleans; environment values are strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _size(value: Any) -> int:
    return parse_size(value)


def _duration(value: Any) -> float:
    return parse_duration(value)


EnvValue = Annotated[str, BeforeValidator(_scalar_to_str)]
Size = Annotated[int, BeforeValidator(_size)]
Duration = Annotated[float, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Environment(_Strict):
    envs: dict[str, EnvValue] = Field(default_factory=dict)


class TaskEnvironment(_Strict):
    image: str | None = None
    scaling_group: str | None = Field(default=None, alias="scaling-group")
    project: str | None = None  # FastTrack metadata, kept
    envs: dict[str, EnvValue] = Field(default_factory=dict)


class Resources(_Strict):
    cpu: float = Field(default=1.0, gt=0)
    mem: Size = 0
    cuda_shares: float = Field(default=0.0, ge=0, alias="cuda.shares")

    def request(self) -> Request:
        return Request(cpu=self.cpu, mem=self.mem, gpu_shares=self.cuda_shares)


class ResourceOpts(_Strict):
    shmem: Size = 0
    # `if-available`: on a machine without GPUs the task runs on the CPU instead of never
    # running, so that one file serves a laptop and a GPU server (a Conveyor extension)
    gpu: Literal["required", "if-available"] = "required"


class Retry(_Strict):
    max_attempts: int = Field(default=1, ge=1)
    delay: Duration = 0.0


class ServiceBlock(_Strict):
    """A task that deploys a model service: it succeeds once the service is up, which then
    outlives the run until `conveyor stop NAME`. The task's resources are each replica's."""

    name: str
    model: str  # the model folder; relative paths start in the task's work folder (mounts)
    runtime_variant: str = "auto"
    replicas: int = Field(default=1, ge=1)
    min_replicas: int | None = Field(default=None, ge=1)
    max_replicas: int | None = Field(default=None, ge=1)
    open_to_public: bool = False
    port: int = Field(default=8000, ge=1, le=65535)
    envs: dict[str, EnvValue] = Field(default_factory=dict)
    startup_timeout: Duration = 300.0

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a service name; use letters, digits, '-', '_'"
                             " or '.'")
        return value

    def command_line(self, request: Request) -> str:
        """The `conveyor serve` call that deploys it and returns once it is up."""
        words = [sys.executable, "-m", "conveyor", "serve", self.model, "--name", self.name,
                 "--runtime", self.runtime_variant, "--replicas", str(self.replicas),
                 "--port", str(self.port), "--cpu", f"{request.cpu:g}", "--mem",
                 str(request.mem), "--gpu", f"{request.gpu_shares:g}",
                 "--startup-timeout", f"{self.startup_timeout:g}", "--detach"]
        if self.min_replicas is not None:
            words += ["--min-replicas", str(self.min_replicas)]
        if self.max_replicas is not None:
            words += ["--max-replicas", str(self.max_replicas)]
        if self.open_to_public:
            words.append("--public")
        for key, value in self.envs.items():
            words += ["--env", f"{key}={value}"]
        return shlex.join(words)


class Mount(_Strict):
    folder: str
    alias: str | None = None  # None: the folder's own name

    @field_validator("folder", "alias")
    @classmethod
    def _simple_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a folder name; write `folder` or `folder:alias`"
                " with letters, digits, '-', '_' or '.'"
            )
        return value

    @property
    def name(self) -> str:
        """Where the folder appears in the session's work folder."""
        return self.alias or self.folder


def _parse_mount(value: Any) -> Any:
    """`folder` or `folder:alias`; an alias written as /home/work/x means x."""
    if not isinstance(value, str):
        return value
    folder, _, alias = value.partition(":")
    return {"folder": folder, "alias": alias.removeprefix("/home/work/").strip("/") or None}


class Task(_Strict):
    name: str
    description: str | None = ""
    type: str = "Custom Task"
    cluster_mode: Literal["single-node", "multi-node"] = "single-node"
    cluster_size: int = Field(default=1, ge=1)
    module_uri: str | None = ""  # FastTrack metadata, kept
    command: str | None = None
    service: ServiceBlock | None = None
    environment: TaskEnvironment = Field(default_factory=TaskEnvironment)
    resources: Resources = Field(default_factory=Resources)
    resource_opts: ResourceOpts = Field(default_factory=ResourceOpts)
    dependencies: list[str] = Field(default_factory=list)
    mounts: list[Annotated[Mount, BeforeValidator(_parse_mount)]] = Field(default_factory=list)
    skip: bool = False
    retry: Retry = Field(default_factory=Retry)
    continue_on_failure: bool = False
    timeout: Duration | None = None
    workdir: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a task name; use letters, digits, '-', '_' or '.'"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the command is empty; write the shell command the task runs")
        return value

    @model_validator(mode="after")
    def _command_or_service(self) -> Task:
        if (self.command is None) == (self.service is None):
            raise ValueError("give the task either a `command` or a `service` block"
                             + (", not both" if self.command else ""))
        return self

    @field_validator("cluster_size")
    @classmethod
    def _cluster_is_consistent(cls, size: int, info: ValidationInfo) -> int:
        if info.data.get("cluster_mode") == "single-node" and size != 1:
            raise ValueError(
                f"cluster_size is {size} but cluster_mode is single-node;"
                " set cluster_mode: multi-node or cluster_size: 1"
            )
        return size

    def shell_command(self, capacity: Capacity) -> str:
        if self.service is None:
            return self.command
        return self.service.command_line(self.replica_request(capacity))

    def replica_request(self, capacity: Capacity) -> Request:
        """What each process (or each replica of a service) asks for on this machine."""
        request = self.resources.request()
        if capacity.gpus == 0 and self.resource_opts.gpu == "if-available":
            return Request(cpu=request.cpu, mem=request.mem)
        return request

    def request(self, capacity: Capacity) -> Request:
        """What each process of the task holds; a service's replicas ask for their own."""
        return Request(cpu=0, mem=0) if self.service else self.replica_request(capacity)

    @property
    def copies(self) -> int:
        """Processes the task starts: one per node of its cluster."""
        return self.cluster_size


class Pipeline(_Strict):
    version: EnvValue = "1"
    name: str
    description: str | None = ""
    ownership: dict[str, Any] | None = None  # FastTrack metadata, kept
    environment: Environment = Field(default_factory=Environment)
    tasks: list[Task] = Field(min_length=1)

    @property
    def dependencies(self) -> dict[str, list[str]]:
        return {t.name: list(t.dependencies) for t in self.tasks}


def load_pipeline(path: str | Path, capacity: Capacity | None = None) -> Pipeline:
    """Read and check a pipeline file; `capacity` adds the check that every task can ever fit."""
    return parse_pipeline(read_pipeline_text(path), str(path), capacity)


def read_pipeline_text(path: str | Path) -> str:
    """A pipeline file's text; a missing or unreadable file is a SpecError naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file; give the path of a pipeline.yaml"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([f"{path}: cannot be read: {err}"]) from None


def parse_pipeline(text: str, source: str, capacity: Capacity | None = None) -> Pipeline:
    doc = load_document(text, source, shape="a mapping with `name` and `tasks`")
    problems = _check_graph(doc, source)
    try:
        pipeline = validate(Pipeline, doc, source)
    except SpecError as err:
        raise SpecError(sorted(problems + err.problems, key=line_number)) from None
    if capacity is not None:
        problems += _check_capacity(pipeline, doc, source, capacity)
    if problems:
        raise SpecError(sorted(problems, key=line_number))
    return pipeline


def _raw_dependencies(doc: LocatedDocument) -> dict[int, tuple[str, list]]:
    """Task index -> (name, dependencies) from the raw YAML, so graph problems are found
    even when other fields are wrong."""
    tasks = doc.data.get("tasks") if isinstance(doc.data, dict) else None
    found = {}
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        if isinstance(task, dict) and isinstance(task.get("name"), str):
            deps = task.get("dependencies") or []
            found[i] = (task["name"], deps if isinstance(deps, list) else [])
    return found


def _check_graph(doc: LocatedDocument, source: str) -> list[str]:
    tasks = _raw_dependencies(doc)
    problems = []
    seen: set[str] = set()
    for i, (name, _) in tasks.items():
        if name in seen:
            line = doc.line_of(("tasks", i, "name"))
            problems.append(f"{source}:{line}: tasks[{i}].name: {name!r} is used by"
                            " another task; task names must be unique")
        seen.add(name)
    for i, (name, deps) in tasks.items():
        for j, dep in enumerate(deps):
            where = f"{source}:{doc.line_of(('tasks', i, 'dependencies', j))}"
            if not isinstance(dep, str):
                continue  # the schema check reports it
            if dep not in seen:
                problems.append(f"{where}: tasks[{name}].dependencies: {dep!r} is not a task"
                                f" of this pipeline; known tasks: {', '.join(sorted(seen))}")
            elif dep == name:
                problems.append(f"{where}: tasks[{name}].dependencies: a task cannot depend"
                                " on itself")
    if problems:
        return problems
    graph_of = {name: [d for d in deps if isinstance(d, str)] for name, deps in tasks.values()}
    cycle = graph.find_cycle(graph_of)
    if cycle:
        first = next(i for i, (name, _) in tasks.items() if name == cycle[0])
        line = doc.line_of(("tasks", first, "dependencies"))
        problems.append(f"{source}:{line}: tasks[{cycle[0]}].dependencies: dependency cycle "
                        f"{' -> '.join(cycle + [cycle[0]])}; remove one of these dependencies")
    return problems


def _check_capacity(
    pipeline: Pipeline, doc: LocatedDocument, source: str, capacity: Capacity
) -> list[str]:
    problems = []
    for i, task in enumerate(pipeline.tasks):
        reason = why_never_fits(task.replica_request(capacity), task.copies, capacity)
        if reason:
            line = doc.line_of(("tasks", i, "resources"))
            nodes = f" ({task.copies} nodes)" if task.copies > 1 else ""
            problems.append(
                f"{source}:{line}: tasks[{task.name}].resources: {reason}{nodes}; lower it,"
                f" or declare a bigger machine with CONVEYOR_CAPACITY (now {capacity.describe()})"
            )
    return problems
