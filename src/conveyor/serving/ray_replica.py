"""A replica's runtime on a node of a Ray cluster (`conveyor serve --cluster ray`).

Each start places a fresh Ray actor holding the replica's resources (`executors.ray`
places it and runs the command there as a local session); the actor picks a free port
on its node, the runtime is built for that port and started, and the gateway (on this
machine) reaches it at the node's IP, or over loopback where the node is this machine
(runtimes listen on loopback unless told otherwise). Its output is polled into the
replica's log file here. When the actor dies with its node, the process counts as ended,
and the replica's restart loop starts a new one, which Ray places on a node that is alive.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shlex
import socket

import psutil

from conveyor.errors import ConfigError
from conveyor.executors import ray as on_ray
from conveyor.executors.base import Exit, JobKey
from conveyor.executors.base import Launch as JobLaunch
from conveyor.pipelines.resources import Capacity, Request
from conveyor.serving.replica import ReplicaPlan, StartFailed
from conveyor.serving.variants import HOST

log = logging.getLogger(__name__)
CLOSE_TIMEOUT = 10.0  # seconds to wait for a session to end before Ray kills its actor
HOST_OPTIONS = ("--host", "--hostname")  # how the runtimes' commands say where to listen


def join_cluster(address: str | None) -> Capacity:
    """Join the Ray cluster at `address` ("auto" when None); its capacity, all nodes together."""
    on_ray.connect(address)
    return on_ray.cluster_capacity(on_ray.alive_nodes())


def check_fits(request: Request, copies: int, scaling_group: str | None) -> None:
    """Refuse, with one line, replicas that no set of live nodes could ever hold."""
    nodes = on_ray.alive_nodes()
    reason = on_ray.why_never_fits(request, copies, scaling_group, nodes)
    if reason is None:
        return
    if scaling_group and not any(scaling_group in node.resources for node in nodes):
        raise ConfigError(f"--scaling-group {scaling_group}: {reason}")
    raise ConfigError(f"{copies} replica(s) of this service can never run on the Ray cluster:"
                      f" {reason}; lower --cpu, --mem, --gpu or --replicas")


class RayProcess:
    """One run of a replica's runtime on whichever Ray node holds its resources."""

    def __init__(self, plan: ReplicaPlan, request: Request, scaling_group: str | None,
                 service: str):
        self.plan = plan
        self.request = request
        self.scaling_group = scaling_group
        self.key = JobKey(f"service:{service}", f"replica-{plan.number}", 0)
        self.host = HOST
        self.port = plan.launch.port
        self.pid: int | None = None
        self.started: float | None = None
        self.node: str | None = None
        self.node_ip: str | None = None
        self.exited: str | None = None
        self._session: on_ray.PlacedSession | None = None
        self._pump: asyncio.Task | None = None
        self._ended = asyncio.Event()

    async def start(self) -> None:
        self._session = on_ray.place_session(self.request, self.scaling_group)
        timeout = self.plan.startup_timeout
        try:
            await asyncio.wait_for(self._start(self._session), timeout)
        except asyncio.TimeoutError:
            raise StartFailed(f"Ray placed it on no live node within {timeout:g} s (none has"
                              " room for it now)") from None
        except on_ray.SessionLost as err:
            raise StartFailed(f"its Ray node died while it started ({err})") from None
        self._pump = asyncio.get_running_loop().create_task(self._follow(self._session))

    async def _start(self, session: on_ray.PlacedSession) -> None:
        (node, ip), port = await asyncio.gather(session.node(), session.free_port())
        self.node, self.node_ip = node, ip  # placed: from now on its session may hold a process
        host = HOST if ip in this_machine() else ip
        plan = self.plan.on_port(port)
        command = plan.launch.command
        if not isinstance(command, str):
            command = shlex.join(listening_on(command, host))
        started = await session.start(JobLaunch(
            self.key, command, plan.cwd, plan.env, self.request, self.scaling_group))
        self.host, self.port = host, plan.launch.port
        self.pid, self.started = started.pid, started.started
        log.info("replica %d: on Ray node %s (%s), at %s:%d", plan.number, node, ip, host,
                 self.port)

    async def ended(self) -> None:
        await self._ended.wait()

    async def stop(self, grace: float) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if self._pump is not None and self.exited is None:
            try:
                await session.stop(grace)
                await asyncio.wait_for(self._ended.wait(), grace + CLOSE_TIMEOUT)
            except (on_ray.SessionLost, asyncio.TimeoutError):
                pass
        if self._pump is not None:
            self._pump.cancel()
        # SIGKILLs what is left of its group, then ends the actor; one never placed at once
        await session.close(CLOSE_TIMEOUT if self.node else 0)

    async def _follow(self, session: on_ray.PlacedSession) -> None:
        """Append the output to the log until the process exits or its actor is lost."""
        try:
            while True:
                lines, exit_ = await session.poll()
                if lines:
                    with open(self.plan.log_file, "a", encoding="utf-8") as out:
                        out.writelines(text + "\n" for _, _, text in lines)
                if exit_ is not None:
                    self.exited = self._why(exit_)
                    return
        except on_ray.SessionLost as err:
            self.exited = f"its Ray node died ({err})"
        finally:
            self._ended.set()

    def _why(self, exit_: Exit) -> str:
        if exit_.error:
            return f"{exit_.error} (on Ray node {self.node_ip})"
        how = exit_.describe() if exit_.signal else f"exited with code {exit_.exit_code}"
        return f"{how} on Ray node {self.node_ip} (see {self.plan.log_file})"


@functools.cache
def this_machine() -> frozenset[str]:
    """The addresses of this machine's interfaces."""
    return frozenset(address.address for addresses in psutil.net_if_addrs().values()
                     for address in addresses
                     if address.family in (socket.AF_INET, socket.AF_INET6))


def listening_on(command: list[str], ip: str) -> list[str]:
    """The runtime's command made to listen on the node's `ip` instead of loopback, so the
    gateway on another machine reaches it."""
    if ip == HOST:
        return command
    changed = []
    for before, arg in zip(["", *command[:-1]], command, strict=True):
        if arg == HOST and before in HOST_OPTIONS:
            arg = ip
        elif arg.startswith(f"{HOST}:"):  # a published port: -p 127.0.0.1:PORT:8000
            arg = ip + arg.removeprefix(HOST)
        changed.append(arg)
    return changed
