"""Runs each job on a node of a Ray cluster; the only module that imports ray.

Ray places the work, Conveyor still runs it the same way: every job of a pipeline is a
Ray task holding the task's resources (`cpu` -> num_cpus, `mem` -> memory,
`cuda.shares` -> num_gpus, `scaling-group` -> a custom resource of that name), and in
it a `LocalExecutor` runs the command as a bash session in its own process group,
with the environment the local executor would give it. The Ray task streams the
output lines and then the exit back (a streaming generator), so logs reach the store
while the task runs; cancelling the stream stops the process group. A multi-node
task reserves a placement group of `cluster_size` bundles, spread over nodes where
possible; every rank learns the address of bundle 0's node.
A service replica is an actor instead (`NodeSession`), placed on its own and driven
from the gateway's event loop (`place_session`), since it lives as long as the service.

A request that no node can ever hold would wait in Ray forever: it is refused before
submission, and a job Ray has not placed after `placement_timeout` seconds fails.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import signal
import subprocess
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
from ray import ObjectRefGenerator
from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError
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
from conveyor.executors.base import Exit, JobKey, Launch, OutputSink, Started, next_exit
from conveyor.executors.local import LocalExecutor
from conveyor.pipelines.resources import Capacity, Request, format_size

log = logging.getLogger(__name__)

NAMESPACE = "conveyor"
POLL_WAIT = 0.5  # seconds an actor holds a poll open waiting for its job to end
PUMP_EVERY = 0.05  # seconds the driver waits for any answer before looking again
PLACEMENT_TIMEOUT = 600.0
NODE_CHECK_EVERY = 2.0  # seconds between looks at which nodes are alive
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
        return (f"a GPU share of {request.gpu_shares:g}: on Ray a share above 1 must be whole;"
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
        self._guard: subprocess.Popen | None = None

    def _keep(self, _key: JobKey, stream: str, at: float, text: str) -> None:
        with self._lock:
            self._lines.append((stream, at, text))

    def start(self, launch: Launch, group: PlacementGroup | None) -> Started:
        self._key = launch.key
        started = self._executor.start(replace(launch, env=_node_env(launch, group)))
        self._guard = _guard(started)
        return replace(started, host=ray.util.get_node_ip_address())

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
        _release(self._guard)

    def node(self) -> tuple[str, str]:
        """Where this session runs: the node's id, and the address it joined the cluster with."""
        node_id = ray.get_runtime_context().get_node_id()
        address = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)
        return node_id, address

    def free_port(self) -> int:
        """A TCP port nothing listens on now on this node, for a server the job will start."""
        with socket.socket() as sock:
            sock.bind(("", 0))
            return sock.getsockname()[1]


@ray.remote(num_returns="streaming", max_retries=0)
def _run_job(launch: Launch, group: PlacementGroup | None, grace: float) -> Iterator[tuple]:
    """One job on the node Ray picked, as a stream: ("started", Started), then ("lines", [...])
    while it runs, then ("exit", Exit). Cancelling the stream stops the job's process group.

    A task, not an actor: Ray runs it in a pooled worker, so no process starts per job."""
    lines: list[tuple[str, float, str]] = []
    lock = threading.Lock()

    def keep(_key: JobKey, stream: str, at: float, text: str) -> None:
        with lock:
            lines.append((stream, at, text))

    def taken() -> list[tuple[str, float, str]]:
        nonlocal lines
        with lock:
            batch, lines = lines, []
        return batch

    executor = LocalExecutor(keep)
    guard = None
    try:
        started = executor.start(replace(launch, env=_node_env(launch, group)))
        guard = _guard(started)
        yield "started", (replace(started, host=ray.util.get_node_ip_address()),
                          ray.get_runtime_context().get_node_id())
        while True:
            exit_ = executor.wait(POLL_WAIT)
            batch = taken()
            if batch:
                yield "lines", batch
            if exit_ is not None:
                yield "exit", exit_
                return
    except (KeyboardInterrupt, TaskCancelledError):  # cancelled: SIGTERM, then SIGKILL
        executor.stop(launch.key, grace)
        executor.wait(grace + 1)
        raise
    finally:
        executor.close()
        _release(guard)


def _guard(started: Started) -> subprocess.Popen | None:
    """A process that kills the job's group if this Ray worker dies before the job ends.

    A job's bash session is its own group, so it would outlive a Ray worker that is killed
    or crashes. The guard waits on a pipe from the worker: "done" when the job has ended;
    a pipe closed without it means the worker is gone. A shell: it starts in a millisecond.
    """
    if started.pid is None:
        return None
    return subprocess.Popen(
        ["/bin/sh", "-c", 'read -r said; [ "$said" = done ] || kill -KILL -"$1"', "orphan-guard",
         str(started.pid)], stdin=subprocess.PIPE, start_new_session=True)


def _release(guard: subprocess.Popen | None) -> None:
    """The job has ended: its guard leaves the group alone and exits."""
    if guard is not None:
        guard.communicate(b"done\n")


def _node_env(launch: Launch, group: PlacementGroup | None) -> dict[str, str]:
    """The local executor's environment, plus where on the cluster this job landed."""
    env = dict(launch.env)
    env["CONVEYOR_RAY_NODE_ID"] = ray.get_runtime_context().get_node_id()
    env["CONVEYOR_NODE_IP"] = ray.util.get_node_ip_address()
    if launch.request.gpu_shares or "CUDA_VISIBLE_DEVICES" in env:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ray.get_gpu_ids())
    if group is not None:
        env["CONVEYOR_CLUSTER_MAIN"] = _main_address(group)
    return env


def _main_address(group: PlacementGroup) -> str:
    """The IP of the node holding bundle 0: every rank's CONVEYOR_CLUSTER_MAIN."""
    node_id = placement_group_table(group)["bundles_to_node_id"][0]
    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


@dataclass
class _Job:
    launch: Launch
    stream: ObjectRefGenerator
    submitted: float
    node_id: str | None = None  # where it runs, once started
    group_key: tuple | None = None
    stopping: bool = False


@dataclass
class _Group:
    group: PlacementGroup
    ranks: set[int] = field(default_factory=set)


class RayExecutor:
    """The executor contract (executors.base) over a Ray cluster."""

    def __init__(self, sink: OutputSink, placement_timeout: float = PLACEMENT_TIMEOUT,
                 grace: float = 10.0):
        self._sink = sink
        self._placement_timeout = placement_timeout
        self._grace = grace
        self._exits: queue.Queue[Exit] = queue.Queue()
        self._jobs: dict[JobKey, _Job] = {}
        self._groups: dict[tuple, _Group] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._added = threading.Event()  # wakes an idle pump as soon as there is a job
        self._pump = threading.Thread(target=self._pump_loop, name="ray-pump", daemon=True)
        self._pump.start()

    def start(self, launch: Launch) -> Started:
        refused = why_never_fits(launch.request, launch.cluster_size, launch.scaling_group,
                                 alive_nodes())
        if refused:
            self._exits.put(Exit(launch.key, None,
                                 error=f"can never run on this cluster: {refused}"))
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
        stream = _run_job.options(**options).remote(launch, group, self._grace)
        with self._lock:
            self._jobs[launch.key] = _Job(launch, stream, time.monotonic(), group_key=group_key)
        self._added.set()
        return Started(launch.key, "ray", None, None)

    def wait(self, timeout: float) -> Exit | None:
        return next_exit(self._exits, timeout)

    def stop(self, key: JobKey, grace: float) -> None:
        """Cancel the job's stream: on its node the process group gets SIGTERM, then SIGKILL
        after the executor's grace; a job not yet placed is dropped."""
        with self._lock:
            job = self._jobs.get(key)
        if job is not None and not job.stopping:
            job.stopping = True
            ray.cancel(job.stream)

    def close(self) -> None:
        self._closed.set()
        self._pump.join(10)
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
            groups, self._groups = list(self._groups.values()), {}
        for job in jobs:
            ray.cancel(job.stream)
        for entry in groups:
            remove_placement_group(entry.group)

    # the driver's side

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
        last_node_check = time.monotonic()
        while not self._closed.is_set():
            with self._lock:
                jobs = {job.stream: job for job in self._jobs.values()}
            if not jobs:
                self._added.wait(PUMP_EVERY)
                self._added.clear()
                continue
            ready, _ = ray.wait(list(jobs), num_returns=len(jobs), timeout=PUMP_EVERY)
            for stream in ready:
                self._take_next(jobs[stream])
            self._drop_unplaced(list(jobs.values()))
            if time.monotonic() - last_node_check > NODE_CHECK_EVERY:
                last_node_check = time.monotonic()
                self._drop_on_dead_nodes(list(jobs.values()))

    def _take_next(self, job: _Job) -> None:
        try:
            kind, value = ray.get(next(job.stream))
        except StopIteration:
            self._end(job, Exit(job.launch.key, None, error="the job ended without an exit"))
            return
        except (TaskCancelledError, RayError) as err:
            self._end(job, _lost(job, err))
            return
        if kind == "started":
            job.node_id = value[1]
        elif kind == "lines":
            for stream, at, text in value:
                self._sink(job.launch.key, stream, at, text)
        else:
            self._end(job, replace(value, key=job.launch.key))

    def _drop_unplaced(self, jobs: list[_Job]) -> None:
        """Jobs Ray has not placed within the placement timeout."""
        now = time.monotonic()
        for job in jobs:
            if job.node_id is None and not job.stopping \
                    and now - job.submitted > self._placement_timeout:
                job.stopping = True
                ray.cancel(job.stream)
                self._end(job, Exit(job.launch.key, None, error=f"Ray did not place it within"
                                                         f" {self._placement_timeout:g} s"))

    def _drop_on_dead_nodes(self, jobs: list[_Job]) -> None:
        """A job whose node died fails now: its stream may never say so (its worker can
        outlive the node's raylet). One still waiting that no live node can hold any more
        fails too: Ray would keep it pending forever."""
        nodes = alive_nodes()
        alive = {node.id for node in nodes}
        for job in jobs:
            if job.stopping:
                continue
            if job.node_id is not None and job.node_id not in alive:
                why = f"its Ray node {job.node_id[:8]} died"
            elif job.node_id is None:
                refused = why_never_fits(job.launch.request, job.launch.cluster_size,
                                         job.launch.scaling_group, nodes)
                if not refused:
                    continue
                why = f"can never run on this cluster any more: {refused}"
            else:
                continue
            job.stopping = True
            ray.cancel(job.stream, force=job.node_id is not None)
            self._end(job, Exit(job.launch.key, None, error=why))

    def _end(self, job: _Job, exit_: Exit) -> None:
        with self._lock:
            if self._jobs.pop(job.launch.key, None) is None:
                return  # ended already
            entry = self._groups.get(job.group_key) if job.group_key else None
            if entry is not None:
                entry.ranks.discard(job.launch.key.rank)
                if not entry.ranks:
                    del self._groups[job.group_key]
                    remove_placement_group(entry.group)
        self._exits.put(exit_)


def _lost(job: _Job, err: Exception) -> Exit:
    if job.stopping:  # the stop we asked for: like a local job killed by SIGTERM
        return Exit(job.launch.key, 128 + signal.SIGTERM, signal=signal.SIGTERM)
    return Exit(job.launch.key, None, error=f"the Ray node or worker running it died"
                                     f" ({type(err).__name__})")


# One long-lived job driven from asyncio (a service replica): a session placed on its own.


class SessionLost(Exception):
    """A placed session's actor is gone: its node died, or its worker was killed."""


def place_session(request: Request, scaling_group: str | None) -> PlacedSession:
    """A NodeSession holding `request` on a node Ray picks (copies spread over nodes where
    possible); it runs nothing until `start`. Creating it does not wait for the placement."""
    options: dict = {"num_cpus": request.cpu, "num_gpus": request.gpu_shares, "resources": {},
                     "scheduling_strategy": "SPREAD"}
    if request.mem:
        options["memory"] = request.mem
    if scaling_group:
        options["resources"][scaling_group] = GROUP_SHARE
    return PlacedSession(NodeSession.options(**options).remote())


class PlacedSession:
    """A NodeSession seen from an event loop: each call is awaited, never blocks the loop, and
    raises SessionLost once the actor is gone. The first call waits for Ray's placement."""

    def __init__(self, actor) -> None:
        self._actor = actor

    async def node(self) -> tuple[str, str]:
        return await self._answer(self._actor.node.remote())

    async def free_port(self) -> int:
        return await self._answer(self._actor.free_port.remote())

    async def start(self, launch: Launch) -> Started:
        return await self._answer(self._actor.start.remote(launch, None))

    async def poll(self, wait: float = POLL_WAIT) -> tuple[list[tuple[str, float, str]],
                                                           Exit | None]:
        return await self._answer(self._actor.poll.remote(wait))

    async def stop(self, grace: float) -> None:
        await self._answer(self._actor.stop.remote(grace))

    async def close(self, timeout: float) -> None:
        """Kill what still runs in the session, then end the actor (placed or not)."""
        try:
            await asyncio.wait_for(self._answer(self._actor.close.remote()), timeout)
        except (SessionLost, asyncio.TimeoutError):
            pass
        await asyncio.to_thread(ray.kill, self._actor)

    @staticmethod
    async def _answer(ref):
        try:
            return await ref
        except RayError as err:
            raise SessionLost(type(err).__name__) from None


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
