"""Where a run's tasks execute: on this machine (the default), or on a Ray cluster for runs
started with `--executor ray`. Ray is imported only for the latter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import UsageError
from conveyor.executors.base import Executor, OutputSink
from conveyor.executors.local import LocalExecutor
from conveyor.pipelines.resources import Capacity
from conveyor.settings import Settings

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Placement:
    executor: str
    factory: Callable[[OutputSink], Executor]
    capacity: Capacity  # what the engine hands out: this machine, or the whole cluster
    on_this_machine: bool  # whether other runs and services here compete for the same resources


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise UsageError(f"--executor {name}: choose one of {', '.join(EXECUTORS)}")
    return name


def join_cluster(options: dict) -> None:
    """Join a Ray run's cluster now; call it from the main thread (Ray sets signal handlers)."""
    if check_executor(options.get("executor") or "local") == "ray":
        from conveyor.executors import ray as on_ray

        on_ray.connect(options.get("ray_address"))


def placement_for(options: dict, settings: Settings, shared: list[Path]) -> Placement:
    """The run's executor; a Ray run first joins the cluster and checks that every node sees
    the `shared` folders."""
    executor = check_executor(options.get("executor") or "local")
    if executor == "local":
        return Placement("local", LocalExecutor, settings.capacity, True)
    from conveyor.executors import ray as on_ray

    on_ray.connect(options.get("ray_address"))
    nodes = on_ray.alive_nodes()
    on_ray.check_shared(shared, nodes)
    return Placement("ray", on_ray.RayExecutor, on_ray.cluster_capacity(nodes), False)
