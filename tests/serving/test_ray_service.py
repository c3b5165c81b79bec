"""`conveyor serve --cluster ray`: replicas on the nodes of a real two-node Ray cluster on
loopback (see `ray_cluster` in conftest), the gateway on this machine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import psutil
import pytest

from conveyor.pipelines.resources import Grant, Request
from conveyor.processes import kill_group
from conveyor.serving.replica import Replica, ReplicaPlan
from conveyor.serving.variants import Launch

pytest.importorskip("ray", reason="Ray is not installed; `pip install -e '.[ray]'`")

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def ask(port: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=10)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def serve_on_ray(cli, tmp_path, replica_server, free_port, ray_cluster):
    """`conveyor serve` of the stand-in runtime, public, named echo, with replicas on Ray."""
    command = f'echo "node=$CONVEYOR_RAY_NODE_ID"; exec {replica_server}'

    def serve(*args: str):
        return cli("serve", tmp_path, "--runtime", "cmd", "--command", command,
                   "--name", "echo", "--public", "--port", free_port, "--cluster", "ray",
                   "--ray-address", ray_cluster.address, "--startup-timeout", "60s", *args,
                   timeout=180)

    return serve


@pytest.fixture
def leftovers():
    """Process groups to kill by pid after the test (a dead node leaves its sessions here)."""
    groups: list[int] = []
    yield groups
    for pid in groups:
        kill_group(pid)


def test_replicas_run_on_ray_nodes_behind_the_local_gateway(
        serve_on_ray, cli, tmp_path, replica_server, free_port, services, info, ray_cluster,
        wait_until):
    started = serve_on_ray("--replicas", "2", "--scaling-group", "gpu-group", "--cpu", "0.5",
                           "--gpu", "0.5", "--detach")
    assert started.returncode == 0, started.stderr
    service = info("echo")
    assert service["status"] == "RUNNING", service
    assert service["options"]["cluster"] == "ray"
    replicas = service["replicas"]
    assert [r["status"] for r in replicas] == ["RUNNING", "RUNNING"]
    for replica in replicas:
        resources = replica["resources"]
        assert resources["executor"] == "ray" and resources["gpus"] == []
        assert resources["node"] == ray_cluster.node_ids["gpu"]  # its scaling group's node
        assert resources["gpu_shares"] == 0.5 and replica["port"] > 0
        with open(replica["log"]) as log:  # its output, polled from its node
            assert f"node={resources['node']}\n" in log.read()

    answers = [ask(free_port) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert {a.json()["pid"] for a in answers} == {r["pid"] for r in replicas}
    assert {a.json()["gpus"] for a in answers} <= {"0", "1"}  # Ray's device, half of it each
    asked = cli("ask", "echo", "What is FOB?", "--json")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)[0]["answer"] == "ok"

    # replicas on the cluster hold none of this machine: a local service takes all of it
    local = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server, "--name",
                "here", "--public", "--port", free_port + 1, "--cpu", "4", "--detach")
    assert local.returncode == 0, local.stderr
    assert cli("stop", "here").returncode == 0

    stopped = cli("stop", "echo")
    assert stopped.returncode == 0, stopped.stderr
    assert info("echo")["status"] == "STOPPED"
    for replica in replicas:
        wait_until(lambda pid=replica["pid"]: gone(pid), timeout=20)


@pytest.mark.parametrize(("args", "message"), [
    (["--cpu", "64"], "can never run on the Ray cluster"),
    (["--scaling-group", "moon"], "--scaling-group moon: no node of the Ray cluster"),
    (["--gpu", "1.5"], "must be whole"),
])
def test_what_no_node_can_hold_is_refused_in_one_line(serve_on_ray, args, message):
    done = serve_on_ray(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_a_scaling_group_needs_the_ray_cluster(cli, tmp_path, replica_server):
    done = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
               "--scaling-group", "gpu-group")
    assert done.returncode == 2 and "add --cluster ray" in done.stderr


def test_a_replica_lost_with_its_node_is_replaced_on_a_live_one(
        serve_on_ray, cli, free_port, services, info, ray_cluster, wait_until, leftovers):
    # a third node in the same scaling group; the replicas spread over it and the gpu node
    ray_cluster.start_node(["--num-cpus=2", '--resources={"gpu-group": 1000, "doomed": 1}'])
    doomed = ray_cluster.node_with("doomed")
    started = serve_on_ray("--replicas", "2", "--scaling-group", "gpu-group", "--cpu", "1",
                           "--gpu", "0", "--detach")
    assert started.returncode == 0, started.stderr
    replicas = info("echo")["replicas"]
    leftovers.extend(r["pid"] for r in replicas)
    nodes = {r["resources"]["node"]: r for r in replicas}
    assert set(nodes) == {doomed, ray_cluster.node_ids["gpu"]}, nodes
    victim = nodes[doomed]

    raylets = [p for p in ray_cluster.processes("raylet") if doomed in " ".join(p.cmdline())]
    assert raylets, "the doomed node's raylet was not found"
    for process in raylets:
        os.kill(process.pid, signal.SIGKILL)

    def replaced() -> bool:
        replica = info("echo")["replicas"][victim["number"]]
        if replica["pid"]:
            leftovers.append(replica["pid"])
        return replica["status"] == "RUNNING" and replica["restarts"] >= 1 \
            and replica["resources"]["node"] == ray_cluster.node_ids["gpu"]

    wait_until(replaced, timeout=90)
    replica = info("echo")["replicas"][victim["number"]]
    assert replica["pid"] != victim["pid"]
    answers = [ask(free_port) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert victim["pid"] not in {a.json()["pid"] for a in answers}
    assert cli("stop", "echo").returncode == 0


def test_a_replica_waiting_for_a_place_says_so_and_retires_at_once(ray_cluster, tmp_path):
    from conveyor.serving.ray_replica import RayProcess

    launch = Launch("sleep 300", 0, None, {})
    plan = ReplicaPlan(0, launch, {}, tmp_path, tmp_path / "replica-0.log", startup_timeout=1,
                       kill_grace=1, relaunch=lambda port: launch)

    async def scenario() -> tuple[list[str], float]:
        said = []
        replica = Replica(plan, Grant(1, 0), lambda r: said.append(r.message),
                          lambda plan: RayProcess(plan, Request(cpu=64), None, "waits"))
        replica.begin()
        while not any("placed it on no live node within 1 s" in m for m in said):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a second try, waiting for its place again
        began = time.monotonic()
        await replica.retire()
        return said, time.monotonic() - began

    said, took = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert said[-1] == "stopped" and took < 3


def test_runtimes_on_another_machine_listen_on_their_node():
    from conveyor.serving.ray_replica import listening_on

    command = ["vllm", "serve", "m", "--host", "127.0.0.1", "--port", "9000"]
    assert listening_on(command, "10.0.0.7")[3:5] == ["--host", "10.0.0.7"]
    assert listening_on(["docker", "-p", "127.0.0.1:9000:8000"], "10.0.0.7")[-1] == \
        "10.0.0.7:9000:8000"
    assert listening_on(command, "127.0.0.1") == command
