"""Runs each job on a node of a Ray cluster; the only module that imports ray.

Ray places the work, Conveyor still runs it the same way: every job is a Ray actor
holding the task's resources (`cpu` -> num_cpus, `mem` -> memory, `cuda.shares` ->
num_gpus, `scaling-group` -> a custom resource of that name), and inside it a
`LocalExecutor` runs the command as a bash session in its own process group, with
the environment the local executor would give it. The driver long-polls each actor
for output lines and the exit, so logs reach the store while the task runs. A
multi-node task reserves a placement group of `cluster_size` bundles, spread over
nodes where possible; every rank learns the address of bundle 0's node.

A request that no node can ever hold would wait in Ray forever: it is refused before
submission, and a job Ray has not placed after `placement_timeout` seconds fails.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from conveyor.errors import ConfigError
from conveyor.executors.base import Exit, JobKey, Launch, OutputSink, Started
from conveyor.executors.local import LocalExecutor
from conveyor.pipelines.resources import Capacity, Request, format_size

log = logging.getLogger(__name__)

NAMESPACE = "conveyor"
POLL_WAIT = 0.5  # seconds an actor holds a poll open waiting for its job to end
PUMP_EVERY = 0.1  # seconds the driver waits for any answer before looking again
PLACEMENT_TIMEOUT = 600.0
GROUP_SHARE = 0.001  # of a scaling group's custom resource: the group is a place, not an amount
SHARED_CHECK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Node:
    id: str
    ip: str
    resources: dict[str, float]


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto": the one this machine belongs to) as a driver."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address or "auto", namespace=NAMESPACE, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot join the Ray cluster at {address or 'auto'}: {reason};"
                          " check --ray-address (host:port of the head's GCS)") from None


def alive_nodes() -> list[Node]:
    return [Node(n["NodeID"], n["NodeManagerAddress"], dict(n["Resources"]))
            for n in ray.nodes() if n["Alive"]]


def cluster_capacity(nodes: list[Node]) -> Capacity:
    """The whole cluster as one machine, for the engine's own bookkeeping; Ray places."""
    return Capacity(cpu=sum(n.resources.get("CPU", 0) for n in nodes),
                    mem=int(sum(n.resources.get("memory", 0) for n in nodes)),
                    gpus=int(sum(n.resources.get("GPU", 0) for n in nodes)))


def ray_resources(request: Request, scaling_group: str | None) -> dict[str, float]:
    """A task's request in Ray's names (bundle form)."""
    wanted = {"CPU": request.cpu}
    if request.mem:
        wanted["memory"] = float(request.mem)
    if request.gpu_shares:
        wanted["GPU"] = request.gpu_shares
    if scaling_group:
        wanted[scaling_group] = GROUP_SHARE
    return wanted


def why_never_fits(request: Request, copies: int, scaling_group: str | None,
                   nodes: list[Node]) -> str | None:
    """Why no placement on these nodes could ever hold the job, or None if one could."""
    if request.gpu_shares > 1 and request.gpu_shares != int(request.gpu_shares):
        return (f"cuda.shares {request.gpu_shares:g}: on Ray a share above 1 must be whole;"
                f" ask for {math.ceil(request.gpu_shares)}")
    wanted = ray_resources(request, scaling_group)
    if scaling_group and not any(scaling_group in n.resources for n in nodes):
        return (f"no node of the Ray cluster has the resource {scaling_group!r} of its"
                " scaling-group; start nodes of that group with"
                f" `ray start --resources='{{\"{scaling_group}\": 1000}}'`")
    room = sum(_copies_that_fit(wanted, n.resources) for n in nodes)
    if room >= copies:
        return None
    asked = ", ".join(f"{_describe(name, amount)}" for name, amount in wanted.items()
                      if name != scaling_group)
    where = f" of scaling-group {scaling_group}" if scaling_group else ""
    biggest = max((_node_text(n) for n in nodes), default="no nodes", key=len)
    return (f"{copies} × ({asked}) fit on no set of nodes{where} of the Ray cluster"
            f" (a node: {biggest})")


def check_shared(folders: list[Path], nodes: list[Node]) -> None:
    """Every node must see the folders tasks read and write: raise ConfigError if one does not."""
    marker = f".conveyor-shared-{uuid.uuid4().hex}"
    written = []
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / marker).write_text(marker)
            written.append(folder / marker)
        checks = {
            node.ip + " " + node.id[:8]: _missing_files.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
            ).remote([str(path) for path in written], marker)
            for node in nodes
        }
        for where, ref in checks.items():
            try:
                missing = ray.get(ref, timeout=SHARED_CHECK_TIMEOUT)
            except (GetTimeoutError, RayError) as err:
                raise ConfigError(f"Ray node {where} did not answer the shared-storage check:"
                                  f" {type(err).__name__}") from None
            if missing:
                raise ConfigError(
                    f"Ray node {where} does not see {Path(missing[0]).parent}: on a cluster the"
                    " storage folders and CONVEYOR_HOME must be on a filesystem every node"
                    " shares (NFS, a cluster filesystem); set CONVEYOR_STORAGE_ROOT and"
                    " CONVEYOR_HOME to such paths")
    finally:
        for path in written:
            path.unlink(missing_ok=True)


@ray.remote
def _missing_files(paths: list[str], content: str) -> list[str]:
    missing = []
    for path in paths:
        try:
            if Path(path).read_text() != content:
                missing.append(path)
        except OSError:
            missing.append(path)
    return missing


@ray.remote(max_restarts=0, max_concurrency=4)
class NodeSession:
    """One job on one node: a local executor there, its output kept until the driver asks."""

    def __init__(self) -> None:
        self._lines: list[tuple[str, float, str]] = []
        self._lock = threading.Lock()
        self._executor = LocalExecutor(self._keep)
        self._key: JobKey | None = None

    def _keep(self, _key: JobKey, stream: str, at: float, text: str) -> None:
        with self._lock:
            self._lines.append((stream, at, text))

    def start(self, launch: Launch, group: PlacementGroup | None) -> Started:
        context = ray.get_runtime_context()
        env = dict(launch.env)
        env["CONVEYOR_RAY_NODE_ID"] = context.get_node_id()
        env["CONVEYOR_NODE_IP"] = ray.util.get_node_ip_address()
        if launch.request.gpu_shares or "CUDA_VISIBLE_DEVICES" in env:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ray.get_gpu_ids())
        if group is not None:
            env["CONVEYOR_CLUSTER_MAIN"] = _main_address(group)
        self._key = launch.key
        started = self._executor.start(replace(launch, env=env))
        return replace(started, host=env["CONVEYOR_NODE_IP"])

    def poll(self, wait: float) -> tuple[list[tuple[str, float, str]], Exit | None]:
        """Output since the last poll, and the exit once there is one (waits up to `wait`)."""
        exit_ = self._executor.wait(wait)
        with self._lock:
            lines, self._lines = self._lines, []
        return lines, exit_

    def stop(self, grace: float) -> None:
        if self._key is not None:
            self._executor.stop(self._key, grace)

    def close(self) -> None:
        self._executor.close()


def _main_address(group: PlacementGroup) -> str:
    """The IP of the node holding bundle 0: every rank's CONVEYOR_CLUSTER_MAIN."""
    node_id = placement_group_table(group)["bundles_to_node_id"][0]
    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


@dataclass
class _Job:
    key: JobKey
    actor: object
    submitted: float
    start_ref: object | None  # until the actor has started the command
    poll_ref: object | None = None
    group_key: tuple | None = None
    stop_grace: float | None = None  # a stop asked before the command started


@dataclass
class _Group:
    group: PlacementGroup
    ranks: set[int] = field(default_factory=set)


class RayExecutor:
    """The executor contract (executors.base) over a Ray cluster."""

    def __init__(self, sink: OutputSink, placement_timeout: float = PLACEMENT_TIMEOUT):
        self._sink = sink
        self._placement_timeout = placement_timeout
        self._exits: queue.Queue[Exit] = queue.Queue()
        self._jobs: dict[JobKey, _Job] = {}
        self._groups: dict[tuple, _Group] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="ray-pump", daemon=True)
        self._pump.start()

    def start(self, launch: Launch) -> Started:
        refused = why_never_fits(launch.request, launch.cluster_size, launch.scaling_group,
                                 alive_nodes())
        if refused:
            self._exits.put(Exit(launch.key, None, error=f"can never run on this cluster:"
                                                         f" {refused}"))
            return Started(launch.key, "ray", None, None)
        options: dict = {"num_cpus": launch.request.cpu, "num_gpus": launch.request.gpu_shares,
                         "resources": {}}
        if launch.request.mem:
            options["memory"] = launch.request.mem
        if launch.scaling_group:
            options["resources"][launch.scaling_group] = GROUP_SHARE
        group_key, group = None, None
        if launch.cluster_size > 1:
            group_key = (launch.key.run_id, launch.key.task, launch.key.attempt)
            group = self._group_for(group_key, launch)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=launch.key.rank)
        actor = NodeSession.options(**options).remote()
        job = _Job(launch.key, actor, time.monotonic(), actor.start.remote(launch, group),
                   group_key=group_key)
        with self._lock:
            self._jobs[launch.key] = job
        return Started(launch.key, "ray", None, None)

    def wait(self, timeout: float) -> Exit | None:
        try:
            return self._exits.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None

    def stop(self, key: JobKey, grace: float) -> None:
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            return
        if job.start_ref is not None:
            job.stop_grace = grace  # the pump stops it once started, or drops it unplaced
            return
        job.actor.stop.remote(grace)

    def close(self) -> None:
        self._closed.set()
        self._pump.join(10)
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
            groups, self._groups = list(self._groups.values()), {}
        closing = [job.actor.close.remote() for job in jobs if job.start_ref is None]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=10)
        except RayError:
            pass
        for job in jobs:
            ray.kill(job.actor)
        for entry in groups:
            remove_placement_group(entry.group)

    # the driver's side of the conversation

    def _group_for(self, group_key: tuple, launch: Launch) -> PlacementGroup:
        with self._lock:
            entry = self._groups.get(group_key)
            if entry is None:
                bundle = ray_resources(launch.request, launch.scaling_group)
                entry = _Group(placement_group([bundle] * launch.cluster_size, strategy="SPREAD"))
                self._groups[group_key] = entry
            entry.ranks.add(launch.key.rank)
            return entry.group

    def _pump_loop(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                jobs = list(self._jobs.values())
            waiting = {}
            for job in jobs:
                if job.start_ref is not None:
                    waiting[job.start_ref] = job
                    continue
                if job.poll_ref is None:
                    job.poll_ref = job.actor.poll.remote(POLL_WAIT)
                waiting[job.poll_ref] = job
            if not waiting:
                self._closed.wait(PUMP_EVERY)
                continue
            ready, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=PUMP_EVERY)
            for ref in ready:
                self._answer(waiting[ref], ref)
            self._drop_unplaced(jobs)

    def _answer(self, job: _Job, ref) -> None:
        try:
            value = ray.get(ref)
        except RayError as err:
            self._end(job, Exit(job.key, None, error="the Ray node or worker running it died"
                                f" ({type(err).__name__})"))
            return
        if ref is job.start_ref:
            job.start_ref = None
            if job.stop_grace is not None:
                job.actor.stop.remote(job.stop_grace)
            return
        job.poll_ref = None
        lines, exit_ = value
        for stream, at, text in lines:
            self._sink(job.key, stream, at, text)
        if exit_ is not None:
            self._end(job, replace(exit_, key=job.key))

    def _drop_unplaced(self, jobs: list[_Job]) -> None:
        """Jobs Ray has not placed in time, or stopped before they were placed."""
        now = time.monotonic()
        for job in jobs:
            if job.start_ref is None:
                continue
            if job.stop_grace is not None:
                self._end(job, Exit(job.key, None, error="stopped before Ray placed it"))
            elif now - job.submitted > self._placement_timeout:
                self._end(job, Exit(job.key, None, error=f"Ray did not place it within"
                                                         f" {self._placement_timeout:g} s"))

    def _end(self, job: _Job, exit_: Exit) -> None:
        with self._lock:
            self._jobs.pop(job.key, None)
            entry = self._groups.get(job.group_key) if job.group_key else None
            if entry is not None:
                entry.ranks.discard(job.key.rank)
                if not entry.ranks:
                    del self._groups[job.group_key]
                    remove_placement_group(entry.group)
        ray.kill(job.actor)
        self._exits.put(exit_)


def _copies_that_fit(wanted: dict[str, float], offered: dict[str, float]) -> int:
    counts = [math.floor(offered.get(name, 0) / amount + 1e-9)
              for name, amount in wanted.items() if amount > 0]
    return min(counts) if counts else 0


def _describe(name: str, amount: float) -> str:
    if name == "memory":
        return f"{format_size(int(amount))} memory"
    return f"{amount:g} {name}"


def _node_text(node: Node) -> str:
    return ", ".join(_describe(name, amount) for name, amount in sorted(node.resources.items())
                     if name in ("CPU", "GPU", "memory"))
