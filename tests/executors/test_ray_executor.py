"""Pipelines on a real two-node Ray cluster on loopback (see `ray_cluster` in conftest)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from conveyor.pipelines.runs import create_run
from conveyor.pipelines.scheduler import RunEngine
from conveyor.processes import kill_group

pytest.importorskip("ray", reason="Ray is not installed; `pip install -e '.[ray]'`")

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "pipeline.yaml"


@pytest.fixture
def ray_run(store, settings, ray_cluster):
    """Create a run of a pipeline file for the cluster; returns its id."""
    return lambda path, **options: create_run(store, settings, path, executor="ray",
                                              ray_address=ray_cluster.address, **options)


@pytest.fixture
def on_ray(store, settings, ray_run):
    """Create a run for the cluster and drive it to the end in this process."""

    def run(path: Path, **options):
        run_id = ray_run(path, **options)
        RunEngine(store, settings, run_id).execute()
        return store.get_run(run_id)

    return run


class Background:
    """A run driven by an engine in a thread, so that the test can act while it runs."""

    def __init__(self, store, settings, run_id: str):
        self.run_id = run_id
        self.engine = RunEngine(store, settings, run_id)
        self.outcome: list[str] = []
        self.thread = threading.Thread(target=lambda: self.outcome.append(self.engine.execute()))
        self.thread.start()

    def finished_within(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()


@pytest.fixture
def in_background(store, settings, ray_run):
    """Start runs in the background; whatever is still running is cancelled afterwards."""
    started: list[Background] = []

    def start(path: Path) -> Background:
        started.append(Background(store, settings, ray_run(path)))
        return started[-1]

    yield start
    for run in started:
        run.engine.cancel()
        run.thread.join(60)


def output(store, run, task: str) -> list[str]:
    return [line.text for line in store.read_logs(run.id, task)]


def values(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines if "=" in line)


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def said_died(store, run_id: str, task: str) -> bool:
    """Whether one of the task's status changes says its node or worker died."""
    return any("died" in (e["message"] or "") for e in store.list_events(run_id)
               if e["task"] == task)


def test_the_hello_example_runs_unchanged_from_the_cli(cli, ray_cluster, store):
    done = cli("run", HELLO, "--executor", "ray", "--ray-address", ray_cluster.address,
               "--json", timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    run = store.list_runs(1)[0]
    assert run.options["executor"] == "ray"
    assert output(store, store.get_run(run.id), "count-a") == ["15"]
    assert output(store, store.get_run(run.id), "join") == ["total words: 30"]


def test_scaling_groups_place_tasks_on_their_node(on_ray, write_pipeline, store, ray_cluster):
    path = write_pipeline("""\
        name: placed
        tasks:
        - name: on-gpu-node
          command: echo "node=$CONVEYOR_RAY_NODE_ID"; echo "out=$CONVEYOR_OUTPUT"
          environment: {scaling-group: gpu-group}
        - name: on-head
          command: echo "node=$CONVEYOR_RAY_NODE_ID"
          environment: {scaling-group: head-group}
        """)
    run = on_ray(path)
    assert run.status == "succeeded", [(t.name, t.message) for t in run.tasks]
    assert values(output(store, run, "on-gpu-node"))["node"] == ray_cluster.node_ids["gpu"]
    assert values(output(store, run, "on-head"))["node"] == ray_cluster.node_ids["head"]
    assert run.task("on-gpu-node").resources["executor"] == "ray"


def test_a_multi_node_task_spreads_over_both_nodes(on_ray, write_pipeline, store, ray_cluster):
    path = write_pipeline("""\
        name: pair
        tasks:
        - name: pair
          cluster_mode: multi-node
          cluster_size: 2
          resources: {cpu: 2}
          command: |
            echo "node=$CONVEYOR_RAY_NODE_ID rank=$CONVEYOR_CLUSTER_RANK"
            echo "main=$CONVEYOR_CLUSTER_MAIN size=$CONVEYOR_CLUSTER_SIZE"
        """)
    run = on_ray(path)
    assert run.status == "succeeded", run.task("pair").message
    lines = [line for line in store.read_logs(run.id, "pair")]
    nodes = {line.rank: line.text.split()[0].removeprefix("node=")
             for line in lines if line.text.startswith("node=")}
    assert set(nodes) == {0, 1}
    assert set(nodes.values()) == set(ray_cluster.node_ids.values())  # one rank on each node
    mains = {line.text.split()[0] for line in lines if line.text.startswith("main=")}
    assert len(mains) == 1 and mains.pop() not in ("main=", "main=None")


def test_half_gpu_tasks_share_one_device_at_once(on_ray, write_pipeline, store):
    path = write_pipeline(f"""\
        name: halves
        tasks:
        - name: a
          command: echo "gpu=$CUDA_VISIBLE_DEVICES"; {sys.executable} -c "import time; print('start=%f' % time.time()); time.sleep(3); print('end=%f' % time.time())"
          resources: {{cpu: 0.5, cuda.shares: 0.5}}
          environment: {{scaling-group: gpu-group}}
        - name: b
          command: echo "gpu=$CUDA_VISIBLE_DEVICES"; {sys.executable} -c "import time; print('start=%f' % time.time()); time.sleep(3); print('end=%f' % time.time())"
          resources: {{cpu: 0.5, cuda.shares: 0.5}}
          environment: {{scaling-group: gpu-group}}
        """)
    run = on_ray(path)
    assert run.status == "succeeded", [(t.name, t.message) for t in run.tasks]
    a, b = values(output(store, run, "a")), values(output(store, run, "b"))
    assert a["gpu"] == b["gpu"] and a["gpu"] in ("0", "1")  # one device, half each
    assert float(a["start"]) < float(b["end"]) and float(b["start"]) < float(a["end"])


def test_requests_no_node_can_hold_fail_at_once(on_ray, write_pipeline):
    path = write_pipeline("""\
        name: too-big
        tasks:
        - {name: huge, command: "true", resources: {cpu: 64}}
        - {name: nowhere, command: "true", environment: {scaling-group: moon}}
        - {name: uneven, command: "true", resources: {cuda.shares: 1.5}}
        """)
    started = time.monotonic()
    run = on_ray(path)
    assert time.monotonic() - started < 60
    assert run.status == "failed"
    assert "can never run" in run.task("huge").message and "64 CPU" in run.task("huge").message
    assert "'moon'" in run.task("nowhere").message
    assert "must be whole" in run.task("uneven").message


def test_cancel_kills_the_remote_process_group(store, in_background, write_pipeline, wait_until):
    path = write_pipeline("""\
        name: long
        tasks:
        - name: sleeper
          command: sleep 300 & echo "child=$!"; wait
          environment: {scaling-group: gpu-group}
        """)
    run = in_background(path)
    wait_until(lambda: any(line.text.startswith("child=")
                           for line in store.read_logs(run.run_id, "sleeper")), timeout=60)
    child = int(store.read_logs(run.run_id, "sleeper")[0].text.split("=")[1])
    assert psutil.pid_exists(child)
    run.engine.cancel()
    assert run.finished_within(60)
    assert run.outcome == ["cancelled"]
    assert store.get_run(run.run_id).task("sleeper").status == "cancelled"
    wait_until(lambda: gone(child), timeout=20)


def test_a_node_that_dies_fails_the_attempt_and_it_is_retried(
        store, ray_cluster, in_background, write_pipeline, wait_until):
    ray_cluster.start_node(["--num-cpus=1", '--resources={"doomed-group": 1000}'])
    doomed = ray_cluster.node_with("doomed-group")
    path = write_pipeline("""\
        name: doomed
        tasks:
        - name: victim
          command: echo "node=$CONVEYOR_RAY_NODE_ID"; echo "group=$$"; sleep 300
          environment: {scaling-group: doomed-group}
          retry: {max_attempts: 2}
        """)
    run = in_background(path)
    try:
        wait_until(lambda: store.read_logs(run.run_id, "victim"), timeout=60)
        assert store.read_logs(run.run_id, "victim")[0].text == f"node={doomed}"
        raylets = [p for p in ray_cluster.processes("raylet") if doomed in " ".join(p.cmdline())]
        assert raylets, "the doomed node's raylet was not found"
        for process in raylets:
            os.kill(process.pid, signal.SIGKILL)
        assert run.finished_within(120), "the engine hangs on a dead node"
    finally:
        # a real node takes its processes with it; this one leaves the task's session behind
        for line in store.read_logs(run.run_id, "victim"):
            if line.text.startswith("group="):
                kill_group(int(line.text.split("=")[1]))
    message = store.get_run(run.run_id).task("victim").message
    attempts = store.list_attempts(run.run_id, "victim")
    assert run.outcome == ["failed"] and len(attempts) == 2
    assert attempts[0].outcome == "failed"
    # the retry finds the node gone, or lands on it before Ray has noticed and dies too
    assert "can never run" in message or "died" in message
    assert said_died(store, run.run_id, "victim")


def test_a_killed_worker_fails_the_attempt_and_leaves_nothing_running(
        store, in_background, write_pipeline, wait_until):
    path = write_pipeline("""\
        name: worker-dies
        tasks:
        - name: victim
          command: |
            if [ "$CONVEYOR_ATTEMPT" = 1 ]; then
              sleep 300 & echo "child=$!"; echo "worker=$PPID"; wait
            fi
            echo "attempt $CONVEYOR_ATTEMPT done"
          retry: {max_attempts: 2}
        """)
    run = in_background(path)
    wait_until(lambda: len(store.read_logs(run.run_id, "victim")) >= 2, timeout=60)
    said = values([line.text for line in store.read_logs(run.run_id, "victim")])
    child, ray_worker = int(said["child"]), int(said["worker"])
    os.kill(ray_worker, signal.SIGKILL)
    assert run.finished_within(120), "the engine hangs on a dead worker"
    assert run.outcome == ["succeeded"]
    attempts = store.list_attempts(run.run_id, "victim")
    assert [a.outcome for a in attempts] == ["failed", "succeeded"]
    assert output(store, store.get_run(run.run_id), "victim")[-1] == "attempt 2 done"
    assert said_died(store, run.run_id, "victim")
    # the first attempt's own process group went with its worker
    wait_until(lambda: gone(child), timeout=20)
