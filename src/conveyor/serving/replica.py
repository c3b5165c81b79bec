"""One replica: its runtime process, its health, and its restarts.

A replica is tended by one asyncio task: start the process, probe it per its health check,
and when it exits or fails its checks, take it out of routing, stop it and start it again
(with a growing pause). The service decides when a replica is wanted at all.

The process itself is a `RuntimeProcess`: a process group of this machine (`LocalProcess`),
or one on a node of a Ray cluster (`serving.ray_replica`); the loop is the same for both.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from conveyor.pipelines.resources import Grant
from conveyor.processes import kill_group, start_time
from conveyor.serving.health import ReplicaState, probe
from conveyor.serving.upstream import Upstream
from conveyor.serving.variants import HOST, Launch

log = logging.getLogger(__name__)
MAX_PAUSE = 30.0  # seconds between restarts, at most
UNTIL_UP_EVERY = 0.25  # seconds between probes while a replica comes up


@dataclass(frozen=True)
class ReplicaPlan:
    """How to run replica `number`: the command and where its output goes."""

    number: int
    launch: Launch
    env: dict[str, str]  # the whole environment of the process
    cwd: Path
    log_file: Path
    startup_timeout: float  # seconds to pass the first health check
    kill_grace: float
    relaunch: Callable[[int], Launch] | None = None  # the command for another port

    def on_port(self, port: int) -> ReplicaPlan:
        """This plan for a port chosen where the replica runs (a Ray node picks its own)."""
        launch = self.relaunch(port) if self.relaunch else self.launch
        env = {**self.env, **launch.env, "PORT": str(launch.port)}
        return replace(self, launch=launch, env=env)


class StartFailed(Exception):
    """The runtime could not be started; the message says why."""


class RuntimeProcess(Protocol):
    """One run of a replica's runtime: where it listens once started, and how it ends."""

    host: str  # where the gateway and the health probes reach it
    port: int
    pid: int | None  # also its process group (on its node)
    started: float | None
    node: str | None  # the cluster node it runs on; None: this machine

    async def start(self) -> None:
        """Start it; raises StartFailed or OSError."""

    @property
    def exited(self) -> str | None:
        """Why it ended, once it has; None while it runs."""

    async def ended(self) -> None:
        """Return once it has ended."""

    async def stop(self, grace: float) -> None:
        """SIGTERM its process group, SIGKILL it (and what it left behind) after `grace`."""


class Replica:
    def __init__(self, plan: ReplicaPlan, grant: Grant,
                 on_change: Callable[[Replica], None],
                 spawn: Callable[[ReplicaPlan], RuntimeProcess] | None = None):
        self.plan = plan
        self.number = plan.number
        self.grant = grant
        self.upstream = Upstream(HOST, plan.launch.port, f"replica {plan.number}")
        self.state = ReplicaState.PROVISIONING
        self.message = "starting"
        self.restarts = 0
        self.wanted = True
        self.pid: int | None = None
        self.started: float | None = None
        self.node: str | None = None
        self._on_change = on_change
        self._spawn = spawn or LocalProcess
        self._process: RuntimeProcess | None = None
        self._woken = asyncio.Event()
        self.task: asyncio.Task | None = None

    def begin(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._tend())

    async def retire(self) -> None:
        """Stop for good (scale-down, service stop)."""
        self.wanted = False
        self._woken.set()
        if self.task is not None:
            await self.task

    # the loop

    async def _tend(self) -> None:
        pause = 1.0
        try:
            while self.wanted:
                reason = await self._run_once()
                if not self.wanted:
                    break
                self._set(ReplicaState.UNHEALTHY, f"{reason}; restarting in {pause:g} s")
                await self._stop_process()
                await self._sleep(pause)
                pause = min(pause * 2, MAX_PAUSE)
                if self.wanted:
                    self.restarts += 1
        finally:
            await self._stop_process()
            self._set(ReplicaState.TERMINATED, "stopped")

    async def _run_once(self) -> str:
        """Run the process until it exits or fails its health; returns why it ended."""
        self._set(ReplicaState.PROVISIONING, "starting")
        try:
            process = await self._start_process()
        except (OSError, StartFailed) as err:
            return f"could not start: {err}"
        if process is None:
            return "stopped"
        check = self.plan.launch.health
        deadline = time.monotonic() + self.plan.startup_timeout
        up = False
        failures = 0
        await self._sleep(check.initial_delay if check else 0)
        while self.wanted:
            if process.exited is not None:
                return process.exited
            problem = await probe(process.host, process.port, check)
            if problem is None:
                failures = 0
                if not up:
                    up = True
                    self._set(ReplicaState.HEALTHY if check else ReplicaState.RUNNING, "")
                if check is None:  # nothing more to watch than the process itself
                    await self._sleep(None)
                    continue
            elif not up:
                if time.monotonic() > deadline:
                    return f"not up within {self.plan.startup_timeout:g} s ({problem})"
            else:
                failures += 1
                if failures >= check.max_retries:
                    return f"failed {failures} health checks in a row ({problem})"
            await self._sleep(check.interval if up and check else UNTIL_UP_EVERY)
        return "stopped"

    async def _sleep(self, seconds: float | None) -> None:
        """Sleep, but wake at once when the process exits or the replica is retired."""
        waits = [asyncio.ensure_future(self._woken.wait())]
        if self._process is not None and self._process.exited is None:
            waits.append(asyncio.ensure_future(self._process.ended()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # the process

    async def _start_process(self) -> RuntimeProcess | None:
        """A new process, started; None if the replica was retired while it started."""
        plan = self.plan
        plan.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(plan.log_file, "ab") as out:
            out.write(f"--- replica {self.number} starting (restart {self.restarts})\n".encode())
        self._process = process = self._spawn(plan)
        starting = asyncio.ensure_future(process.start())
        retired = asyncio.ensure_future(self._woken.wait())
        try:  # a start that waits for a place on a cluster gives way to a retirement
            await asyncio.wait([starting, retired], return_when=asyncio.FIRST_COMPLETED)
        finally:
            retired.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.wait([starting])
        if starting.cancelled():
            return None
        starting.result()  # raises what the start raised
        self.pid, self.started, self.node = process.pid, process.started, process.node
        self.upstream.host, self.upstream.port = process.host, process.port
        return process

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        self.upstream.accepting = False
        self.upstream.close_idle()
        if process is not None:
            await process.stop(self.plan.kill_grace)

    def _set(self, state: ReplicaState, message: str) -> None:
        if state != ReplicaState.PROVISIONING or self.state != state:
            log.info("replica %d: %s%s", self.number, state, f" ({message})" if message else "")
        self.state = state
        self.message = message
        self.upstream.accepting = state.serving and self.wanted
        if not state.serving:
            self.upstream.close_idle()
        self._on_change(self)

    def __repr__(self) -> str:
        return f"Replica({self.number}, {self.state}, port {self.upstream.port}, pid {self.pid})"


class LocalProcess:
    """The runtime as a process group of this machine, its output appended to the replica's log."""

    node = None

    def __init__(self, plan: ReplicaPlan):
        self.plan = plan
        self.host = HOST
        self.port = plan.launch.port
        self.pid: int | None = None
        self.started: float | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        plan = self.plan
        with open(plan.log_file, "ab") as out:
            common = dict(stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                          env=plan.env, cwd=plan.cwd, start_new_session=True)
            command = plan.launch.command
            if isinstance(command, str):
                self._process = await asyncio.create_subprocess_exec(
                    "bash", "--noprofile", "--norc", "-c", command, **common)
            else:
                self._process = await asyncio.create_subprocess_exec(*command, **common)
        self.pid = self._process.pid
        self.started = start_time(self.pid)

    @property
    def exited(self) -> str | None:
        code = self._process.returncode if self._process is not None else None
        return None if code is None else f"exited with code {code} (see {self.plan.log_file})"

    async def ended(self) -> None:
        if self._process is not None:
            await self._process.wait()

    async def stop(self, grace: float) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            kill_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except asyncio.TimeoutError:
                pass
        kill_group(process.pid, signal.SIGKILL)  # and whatever it left behind in its group
        if process.returncode is None:
            await process.wait()


def process_env(base: dict[str, str], grant: Grant, launch: Launch) -> dict[str, str]:
    """The replica's environment: the service's, the runtime's, its port and its GPUs."""
    env = dict(base)
    env.update(launch.env)
    env["PORT"] = str(launch.port)
    env["CUDA_VISIBLE_DEVICES"] = grant.visible_devices
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env

