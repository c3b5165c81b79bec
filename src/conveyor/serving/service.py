"""A service: one gateway and its replicas, hosted by one process (`conveyor serve`).

`plan_service` checks everything a user can get wrong before anything starts; `ServiceHost`
then runs the gateway, keeps the wanted number of replicas alive, scales between the minimum
and the maximum, and records every state change in the store for `conveyor service(s)`.
Replicas run on this machine, or (`--cluster ray`) on the nodes of a Ray cluster, while the
gateway stays here; `serving.ray_replica` is imported only for the latter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from conveyor import resource_ledger
from conveyor.errors import ConfigError, ConveyorError, UsageError
from conveyor.pipelines.resources import (
    Capacity,
    Request,
    ResourcePool,
    format_size,
    why_never_fits,
)
from conveyor.processes import is_same_process, kill_group, owner_is_alive, this_process_id
from conveyor.serving.auth import TokenVerifier, new_secret
from conveyor.serving.autoscale import Autoscaler, ScalePolicy
from conveyor.serving.folder import DEFINITION_FILE, ModelFolder, ModelFolderError, inspect_folder
from conveyor.serving.gateway import Gateway, GatewaySettings
from conveyor.serving.health import ServiceStatus, service_status
from conveyor.serving.metrics import GatewayMetrics
from conveyor.serving.pre_start import check_actions, run_actions
from conveyor.serving.replica import Replica, ReplicaPlan, process_env
from conveyor.serving.variants import VARIANTS
from conveyor.settings import Settings
from conveyor.store.repository import Store
from conveyor.store.services import ServiceRecord

log = logging.getLogger(__name__)
RUNTIMES = ("auto", "builtin", *[n for n in VARIANTS if n != "builtin"])
GPU_RUNTIMES = ("vllm", "sglang", "tgi", "nim")
CLUSTERS = ("local", "ray")
DRAIN_LIMIT = 30.0  # seconds a replica being removed may finish what it is answering
TICK = 0.5  # seconds between looks at load and stop requests
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ServiceError(ConveyorError):
    exit_code = 2


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    folder: ModelFolder
    runtime: str
    model_name: str
    host: str
    port: int
    public: bool
    secret_env: str | None  # where the token secret comes from; None: a file of the service's
    policy: ScalePolicy
    request: Request  # per replica
    env: dict[str, str] = field(default_factory=dict)  # --env pairs
    startup_timeout: float = 300.0
    cluster: str = "local"  # where the replicas run: this machine, or a Ray cluster
    ray_address: str | None = None
    scaling_group: str | None = None  # Ray: only nodes with this custom resource
    capacity: Capacity | None = None  # what the replicas may hold in all; None: this machine

    def options(self) -> dict:
        """What the store keeps of the spec (no environment values: they may be secrets)."""
        return {"replicas": self.policy.min_replicas, "min_replicas": self.policy.min_replicas,
                "max_replicas": self.policy.max_replicas, "cpu": self.request.cpu,
                "mem": format_size(self.request.mem), "gpu": self.request.gpu_shares,
                "env": sorted(self.env), "secret_env": self.secret_env,
                "startup_timeout": self.startup_timeout, "cluster": self.cluster,
                "ray_address": self.ray_address, "scaling_group": self.scaling_group}


def plan_service(model_dir: Path, *, settings: Settings, name: str | None = None,
                 runtime: str = "auto", host: str = "127.0.0.1", port: int = 8000,
                 replicas: int = 1, min_replicas: int | None = None,
                 max_replicas: int | None = None, public: bool = False,
                 secret_env: str | None = None, env: dict[str, str] | None = None,
                 command: str | None = None, cpu: float = 1.0, mem: int = 0,
                 gpu: float | None = None, startup_timeout: float = 300.0,
                 scale_up_at: float = 4.0, scale_down_at: float = 0.5,
                 cooldown: float = 30.0, cluster: str | None = None,
                 ray_address: str | None = None,
                 scaling_group: str | None = None) -> ServiceSpec:
    """Check a `conveyor serve` request and settle its defaults; raises with one clear line."""
    env = dict(env or {})
    if command:
        env["CONVEYOR_COMMAND"] = command
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r} is not a runtime; use one of {', '.join(RUNTIMES)}")
    cluster = cluster or settings.executor
    if cluster not in CLUSTERS:
        raise UsageError(f"--cluster {cluster!r}: choose one of {', '.join(CLUSTERS)}")
    if cluster == "local" and scaling_group:
        raise UsageError("--scaling-group places replicas on the nodes of a Ray cluster; add"
                         " --cluster ray")
    folder = _inspect(Path(model_dir).resolve(), runtime)
    capacity = settings.capacity
    if cluster == "ray":
        from conveyor.serving import ray_replica

        ray_address = ray_address or settings.ray_address
        capacity = ray_replica.join_cluster(ray_address)
    if gpu is None:  # a whole device where there is one: runtimes on GPUs expect it
        gpu = 1.0 if capacity.gpus > 0 else 0.0
    runtime = choose_runtime(folder, runtime, gpu)
    VARIANTS[runtime].check_installed()
    lowest = replicas if min_replicas is None else min_replicas
    highest = max(replicas, lowest) if max_replicas is None else max_replicas
    if not 0 < lowest <= highest:
        raise UsageError(f"replicas: need 1 <= --min-replicas ({lowest}) <= --max-replicas"
                         f" ({highest})")
    if public and secret_env:
        raise UsageError("--public and --token-secret-env exclude each other: a public service"
                         " takes no token")
    if secret_env and not os.environ.get(secret_env):
        raise UsageError(f"--token-secret-env {secret_env}: the variable is not set in this"
                         " environment; export it first")
    request = Request(cpu=cpu, mem=mem, gpu_shares=gpu)
    if cluster == "ray":
        ray_replica.check_fits(request, lowest, scaling_group)
    else:
        reason = why_never_fits(request, lowest, settings.capacity)
        if reason:
            raise ConfigError(f"{lowest} replica(s) of this service {reason}; lower --cpu,"
                              " --mem, --gpu or --replicas")
    served = name or env.get("BACKEND_MODEL_NAME") or os.environ.get("BACKEND_MODEL_NAME") \
        or folder.path.name
    if not SERVICE_NAME.match(served):
        raise UsageError(f"{served!r} cannot name a service; give --name with letters, digits,"
                         " '-', '_' or '.'")
    env["BACKEND_MODEL_NAME"] = served  # every runtime serves the name the gateway checks
    spec = ServiceSpec(
        name=served, folder=folder, runtime=runtime, model_name=served,
        host=host, port=port, public=public, secret_env=secret_env,
        policy=ScalePolicy(lowest, highest, scale_up_at, scale_down_at, cooldown),
        request=request, env=env, startup_timeout=startup_timeout, cluster=cluster,
        ray_address=ray_address if cluster == "ray" else None, scaling_group=scaling_group,
        capacity=capacity)
    VARIANTS[runtime].build(folder, 0, spec.model_name, _variant_env(spec))  # fails early
    if runtime == "custom":
        check_actions(_pre_start(spec), folder.path / DEFINITION_FILE)
    return spec


def _pre_start(spec: ServiceSpec) -> list:
    definition = spec.folder.definition
    return definition.models[0].service.pre_start_actions if definition else []


def choose_runtime(folder: ModelFolder, requested: str, gpu_share: float) -> str:
    """`auto`: definition file → custom; GGUF → llamacpp; HF with a GPU and vLLM → vllm;
    otherwise the builtin transformers runtime."""
    if requested != "auto":
        return requested
    if folder.kind == "definition":
        return "custom"
    if folder.kind == "gguf":
        return "llamacpp"
    if gpu_share > 0 and shutil.which("vllm"):
        return "vllm"
    return "builtin"


def _inspect(path: Path, runtime: str) -> ModelFolder:
    try:
        return inspect_folder(path)
    except ModelFolderError:
        if runtime == "cmd" and path.is_dir():  # the user's command knows what the folder holds
            return ModelFolder(path, "other")
        raise


def _variant_env(spec: ServiceSpec) -> dict[str, str]:
    return {**os.environ, **spec.env}


def secret_for(settings: Settings, name: str, secret_env: str | None) -> str:
    """The key that signs the service's tokens: from `secret_env`, or a file made once."""
    if secret_env:
        value = os.environ.get(secret_env)
        if not value:
            raise UsageError(f"the service {name} signs tokens with ${secret_env}, which is not"
                             " set here; export it first")
        return value
    file = service_dir(settings, name) / "secret"
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(new_secret())
    return file.read_text().strip()


def service_dir(settings: Settings, name: str) -> Path:
    return settings.home / "services" / name


def is_live(record: ServiceRecord) -> bool:
    """Whether the process hosting `record` still runs (on another host: assumed so)."""
    if record.status in (ServiceStatus.STOPPED, ServiceStatus.FAILED) or not record.owner:
        return False
    return owner_is_alive(record.owner) is not False


def kill_leftovers(record: ServiceRecord) -> None:
    """Replicas whose host process died outlive it (they have sessions of their own)."""
    for replica in record.replicas:
        if not _on_this_machine(replica.resources or {}):
            continue  # its pid is one of its Ray node
        if replica.pid and is_same_process(replica.pid, replica.started):
            kill_group(replica.pid)


def _on_this_machine(resources: dict) -> bool:
    return resources.get("executor", "local") == "local" or \
        str(resources.get("host", "")).startswith("127.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceHost:
    def __init__(self, spec: ServiceSpec, store: Store, settings: Settings):
        self.spec = spec
        self.store = store
        self.settings = settings
        self.metrics = GatewayMetrics(spec.name)
        verifier = None if spec.public else TokenVerifier(
            secret_for(settings, spec.name, spec.secret_env), spec.name)
        self.gateway = Gateway(GatewaySettings(service=spec.name, model=spec.model_name, verifier=verifier,
                                               status=lambda: self.status), self.metrics)
        self.replicas: list[Replica] = []
        # what this service's replicas hold, of this machine or of the whole cluster
        self.pool = ResourcePool(spec.capacity or settings.capacity)
        self.status = ServiceStatus.PROVISIONING
        self.stopping = asyncio.Event()
        self._numbers = 0
        self._draining: set[asyncio.Task] = set()

    async def run(self) -> ServiceStatus:
        """Host the service until it is stopped (signal, `conveyor stop`)."""
        self._claim()
        try:
            if self.spec.runtime == "custom":
                await asyncio.to_thread(run_actions, _pre_start(self.spec), self.spec.folder.path,
                                        _variant_env(self.spec))
            for _ in range(self.spec.policy.min_replicas):
                if not self._add_replica():
                    raise ServiceError(f"service {self.spec.name}: not enough free resources"
                                       " for its replicas now (runs or other services hold"
                                       " them); try again later or ask for less")
            try:
                server = await self.gateway.serve(self.spec.host, self.spec.port)
            except OSError as err:
                raise ServiceError(f"cannot listen on {self.spec.host}:{self.spec.port}:"
                                   f" {err.strerror or err}; choose another --port") from None
            if self.spec.port == 0:  # the system chose one: say which
                self.store.update_service(self.spec.name,
                                          port=server.sockets[0].getsockname()[1])
            self._watch_signals()
            try:
                await self._steer()
            finally:
                server.close()
        except BaseException as err:
            await self._retire_all()
            failed = isinstance(err, ConveyorError)
            self._record_status(ServiceStatus.FAILED if failed else ServiceStatus.STOPPED,
                                str(err) if failed else "stopped")
            raise
        await self._retire_all()
        self._record_status(ServiceStatus.STOPPED, "stopped")
        return ServiceStatus.STOPPED

    # start and steer

    def _claim(self) -> None:
        spec = self.spec
        existing = self.store.get_service(spec.name)
        if existing is not None and is_live(existing):
            raise ServiceError(f"a service named {spec.name} already runs (port {existing.port});"
                               f" stop it with `conveyor stop {spec.name}` or choose --name")
        if existing is not None:
            kill_leftovers(existing)
        self.store.claim_service({
            "name": spec.name, "model_dir": str(spec.folder.path), "runtime": spec.runtime,
            "model_name": spec.model_name, "host": spec.host, "port": spec.port,
            "public": spec.public, "options": spec.options(), "status": self.status,
            "message": "starting", "owner": this_process_id(),
        }, replacing=True)

    def _watch_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def _steer(self) -> None:
        scaler = Autoscaler(self.spec.policy, time.monotonic())
        last_store_look = 0.0
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), TICK)
            except asyncio.TimeoutError:
                pass
            at = time.monotonic()
            if at - last_store_look >= 1.0:
                last_store_look = at
                if self.store.service_stop_requested(self.spec.name):
                    self.stopping.set()
                    break
            active = [r for r in self.replicas if r.wanted]
            scaler.observe(at, sum(r.upstream.outstanding for r in active))
            change = scaler.decide(at, len(active))
            if change > 0 and self._add_replica():
                scaler.changed(at)
            elif change < 0 and len(active) > 1:
                self._drain(active[-1])
                scaler.changed(at)

    def _add_replica(self) -> bool:
        spec = self.spec
        on_ray = spec.cluster == "ray"  # Ray arbitrates the cluster; the pool only counts
        elsewhere = [] if on_ray else resource_ledger.held_elsewhere(
            self.store, except_service=spec.name)
        grants = resource_ledger.acquire(self.pool, spec.request, 1, elsewhere)
        if grants is None:
            log.warning("service %s: no room for another replica now", spec.name)
            return False
        number = self._numbers
        self._numbers += 1

        def build(port: int):
            return VARIANTS[spec.runtime].build(spec.folder, port, spec.model_name,
                                                _variant_env(spec))

        launch = build(0 if on_ray else free_port())  # a Ray node picks its port at each start
        folder = service_dir(self.settings, spec.name)
        plan = ReplicaPlan(
            number=number, launch=launch,
            env=process_env({**os.environ, **spec.env}, grants[0], launch),
            cwd=spec.folder.path, log_file=folder / f"replica-{number}.log",
            startup_timeout=spec.startup_timeout, kill_grace=self.settings.kill_grace,
            relaunch=build)
        spawn = None
        if on_ray:
            from conveyor.serving.ray_replica import RayProcess

            def spawn(plan: ReplicaPlan) -> RayProcess:
                return RayProcess(plan, spec.request, spec.scaling_group, spec.name)

        replica = Replica(plan, grants[0], self._replica_changed, spawn)
        self.replicas.append(replica)
        self._replica_changed(replica)  # its grant is in the store before anyone else looks
        self.gateway.upstreams.append(replica.upstream)
        replica.begin()
        return True

    def _drain(self, replica: Replica) -> None:
        """Take a replica out of routing, let it finish what it answers, then stop it."""
        replica.wanted = False
        replica.upstream.accepting = False

        async def finish() -> None:
            deadline = time.monotonic() + DRAIN_LIMIT
            while replica.upstream.outstanding and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await self._retire(replica)

        task = asyncio.get_running_loop().create_task(finish())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _retire(self, replica: Replica) -> None:
        await replica.retire()
        if replica.upstream in self.gateway.upstreams:  # once, though drain and stop may both ask
            self.gateway.upstreams.remove(replica.upstream)
            self.pool.release(replica.grant)

    async def _retire_all(self) -> None:
        await asyncio.gather(*(self._retire(r) for r in list(self.replicas) if r.task),
                             *self._draining, return_exceptions=True)

    # recording

    def _replica_changed(self, replica: Replica) -> None:
        self.store.save_replica(self.spec.name, replica.number, status=replica.state,
                                port=replica.upstream.port, pid=replica.pid,
                                started=replica.started, resources=self._resources(replica),
                                restarts=replica.restarts, message=replica.message)
        states = [r.state for r in self.replicas]
        self.metrics.set_replicas({s: states.count(s) for s in set(states)})
        status = service_status(states)
        if status != self.status and not self.stopping.is_set():
            log.info("service %s: %s", self.spec.name, status)
            self._record_status(status, replica.message or None)

    def _resources(self, replica: Replica) -> dict:
        """What the replica holds; on a cluster also where (the ledger counts only this machine)."""
        given = replica.grant.as_dict()
        if self.spec.cluster != "local":  # the cluster picks devices: the pool's indices are moot
            given.update(executor=self.spec.cluster, gpus=[],
                         gpu_shares=self.spec.request.gpu_shares,
                         scaling_group=self.spec.scaling_group, node=replica.node,
                         host=replica.upstream.host)
        return given

    def _record_status(self, status: ServiceStatus, message: str | None) -> None:
        self.status = status
        self.store.update_service(self.spec.name, status=status, message=message)
