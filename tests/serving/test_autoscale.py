from __future__ import annotations

import threading

import httpx

from conveyor.serving.autoscale import Autoscaler, ScalePolicy
from conveyor.serving.health import ReplicaState as R
from conveyor.serving.health import ServiceStatus as S
from conveyor.serving.health import service_status


def scaler(**policy) -> Autoscaler:
    return Autoscaler(ScalePolicy(**{"min_replicas": 1, "max_replicas": 3, "scale_up_at": 4,
                                     "scale_down_at": 1, "cooldown": 10, **policy}), started_at=0)


def test_scales_up_on_sustained_load_and_waits_a_cooldown_between_steps():
    autoscaler = scaler()
    for t in range(0, 10):
        autoscaler.observe(t, 12)
    assert autoscaler.decide(9, replicas=1) == 0  # still in the cooldown after the start
    autoscaler.observe(10, 12)
    assert autoscaler.decide(10, replicas=1) == +1
    autoscaler.changed(10)
    autoscaler.observe(11, 12)
    assert autoscaler.decide(11, replicas=2) == 0
    for t in range(12, 21):
        autoscaler.observe(t, 12)
    assert autoscaler.decide(20, replicas=2) == +1  # 6 per replica
    autoscaler.changed(20)
    for t in range(21, 31):
        autoscaler.observe(t, 12)
    assert autoscaler.decide(30, replicas=3) == 0  # at the maximum


def test_scales_down_when_idle_but_not_below_the_minimum():
    autoscaler = scaler(min_replicas=2)
    for t in range(0, 11):
        autoscaler.observe(t, 1)
    assert autoscaler.decide(10, replicas=3) == -1  # 0.33 per replica
    assert autoscaler.decide(10, replicas=2) == 0
    assert autoscaler.decide(10, replicas=1) == +1  # below the minimum: at once


def test_a_short_burst_is_averaged_out():
    autoscaler = scaler()
    for t in range(0, 11):
        autoscaler.observe(t, 20 if t == 10 else 2)
    assert autoscaler.decide(10, replicas=1) == 0  # (10 * 2 + 20) / 11 = 3.6 per replica
    autoscaler.observe(10.5, 40)
    assert autoscaler.decide(10.5, replicas=1) == +1  # (20 + 20 + 40) / 12 = 6.7


def test_fixed_replica_counts_never_scale():
    autoscaler = scaler(min_replicas=2, max_replicas=2)
    for t in range(0, 20):
        autoscaler.observe(t, 100)
    assert autoscaler.decide(20, replicas=2) == 0


def test_service_status_adds_up_replica_states():
    assert service_status([R.HEALTHY, R.HEALTHY]) == S.HEALTHY
    assert service_status([R.HEALTHY, R.UNHEALTHY]) == S.DEGRADED
    assert service_status([R.HEALTHY, R.PROVISIONING]) == S.DEGRADED
    assert service_status([R.UNHEALTHY, R.PROVISIONING]) == S.UNHEALTHY
    assert service_status([R.PROVISIONING, R.PROVISIONING]) == S.PROVISIONING
    assert service_status([R.RUNNING]) == S.RUNNING
    assert service_status([R.HEALTHY, R.TERMINATED]) == S.HEALTHY
    assert service_status([R.TERMINATED]) == S.UNHEALTHY


def test_a_service_scales_out_under_load_and_back_when_idle(
        cli, tmp_path, replica_server, free_port, services, info, wait_until):
    started = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                  "--port", free_port, "--name", "elastic", "--public", "--min-replicas", "1",
                  "--max-replicas", "2", "--scale-up-at", "1.5", "--scale-down-at", "0.5",
                  "--cooldown", "1s", "--detach")
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{free_port}/v1/chat/completions"
    busy = threading.Event()

    def client() -> None:
        while not busy.is_set():
            httpx.post(url, json={"model": "elastic", "messages": [{"role": "user"}],
                                  "sleep": 0.2}, timeout=10)

    workers = [threading.Thread(target=client) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: sum(r["status"] == "RUNNING" for r in info("elastic")["replicas"]) == 2,
                   timeout=30)
        metrics = httpx.get(f"http://127.0.0.1:{free_port}/metrics").text
        assert 'conveyor_service_replicas{service="elastic",state="RUNNING"} 2.0' in metrics
    finally:
        busy.set()
        for worker in workers:
            worker.join()
    wait_until(lambda: [r["status"] for r in info("elastic")["replicas"]]
               == ["RUNNING", "TERMINATED"], timeout=30)
