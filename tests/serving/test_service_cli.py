"""`conveyor serve / services / service / token / stop` as a user runs them, over loopback."""

from __future__ import annotations

import json
import re

import httpx
import jwt
import pytest

from conveyor.processes import start_time

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def bearer(stdout: str) -> dict:
    token = re.search(r"Authorization: Bearer (\S+)", stdout)[1]
    return {"authorization": f"Bearer {token}"}


def ask(port: int, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT,
                      headers=headers or {}, timeout=10)


def test_a_killed_replica_gets_no_traffic_and_is_restarted(
        cli, tmp_path, replica_server, free_port, services, info, kill, wait_until):
    started = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                  "--replicas", "2", "--port", free_port, "--name", "echo", "--detach")
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{free_port}/v1" in started.stdout
    headers = bearer(started.stdout)

    refused = ask(free_port)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"

    service = info("echo")
    assert service["status"] == "RUNNING"  # the cmd runtime has no health check
    first, second = (r["pid"] for r in service["replicas"])
    assert {ask(free_port, headers).json()["pid"] for _ in range(6)} == {first, second}

    kill(first)
    wait_until(lambda: info("echo")["replicas"][0]["status"] != "RUNNING", timeout=10)
    # from now on nothing goes to the dead process, and nothing fails
    answers = [ask(free_port, headers) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert first not in {a.json()["pid"] for a in answers}

    wait_until(lambda: info("echo")["replicas"][0]["status"] == "RUNNING", timeout=20)
    restarted = info("echo")["replicas"][0]
    assert restarted["restarts"] == 1 and restarted["pid"] not in (first, second)
    assert restarted["pid"] in {ask(free_port, headers).json()["pid"] for _ in range(6)}

    stopped = cli("stop", "echo")
    assert stopped.returncode == 0, stopped.stderr
    assert start_time(second) is None and start_time(restarted["pid"]) is None
    assert info("echo")["status"] == "STOPPED"
    assert "echo" in cli("services").stdout


def test_a_definition_file_with_a_failing_health_check(
        cli, tmp_path, replica_server, free_port, services, info, wait_until):
    model = tmp_path / "model"
    model.mkdir()
    replica_port = free_port + 1 if free_port < 65000 else free_port - 1
    (model / "model-definition.yaml").write_text(f"""
models:
  - name: echo-model
    model_path: /models
    service:
      pre_start_actions:
        - action: mkdir
          args: {{path: cache}}
        - action: write_file
          args: {{filename: cache/settings.json, body: '{{"ready": true}}', mode: "0600"}}
        - action: run_command
          args: {{command: [cp, cache/settings.json, cache/copied.json]}}
      start_command: {replica_server}
      port: {replica_port}
      health_check:
        path: /health
        interval: 0.2
        max_retries: 2
        max_wait_time: 1
""")
    sick = tmp_path / "sick"
    started = cli("serve", model, "--name", "echo", "--port", free_port, "--public",
                  "--env", f"SICK_FILE={sick}", "--detach")
    assert started.returncode == 0, started.stderr
    service = info("echo")
    assert service["runtime"] == "custom" and service["status"] == "HEALTHY"
    assert service["replicas"][0]["port"] == replica_port
    assert ask(free_port).status_code == 200  # public: no token
    assert json.loads((model / "cache" / "copied.json").read_text()) == {"ready": True}
    assert (model / "cache" / "settings.json").stat().st_mode & 0o777 == 0o600

    sick.touch()
    wait_until(lambda: info("echo")["replicas"][0]["restarts"] >= 1, timeout=20)
    assert info("echo")["status"] != "HEALTHY"
    sick.unlink()
    wait_until(lambda: info("echo")["status"] == "HEALTHY", timeout=20)
    assert ask(free_port).status_code == 200


def test_tokens_from_a_secret_in_the_environment(
        cli, tmp_path, replica_server, free_port, services, monkeypatch):
    monkeypatch.setenv("ECHO_SECRET", "a-secret-of-at-least-thirty-two-bytes!")
    started = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                  "--port", free_port, "--name", "echo", "--token-secret-env", "ECHO_SECRET",
                  "--detach")
    assert started.returncode == 0, started.stderr
    made = cli("token", "echo", "--lifetime", "1h")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    claims = jwt.decode(token, "a-secret-of-at-least-thirty-two-bytes!", algorithms=["HS256"])
    assert claims["sub"] == "echo" and 3590 <= claims["exp"] - claims["iat"] <= 3600
    assert ask(free_port, {"authorization": f"Bearer {token}"}).status_code == 200
    assert ask(free_port, {"authorization": f"Bearer {token}x"}).status_code == 401


def test_a_service_and_a_pipeline_share_one_gpu_without_oversubscribing(
        cli, tmp_path, replica_server, free_port, services, monkeypatch, write_pipeline,
        wait_until):
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=4,mem=8g,gpu=1")
    started = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                  "--port", free_port, "--name", "echo", "--public", "--gpu", "0.75",
                  "--detach")
    assert started.returncode == 0, started.stderr
    assert ask(free_port).json()["gpus"] == "0"

    second = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                 "--port", free_port + 1, "--name", "echo2", "--public", "--gpu", "0.5")
    assert second.returncode != 0
    assert "not enough free resources" in second.stderr

    pipeline = write_pipeline("""
name: wants-half-a-gpu
tasks:
- name: train
  command: echo "gpu=$CUDA_VISIBLE_DEVICES"
  resources: {cpu: 1, cuda.shares: "0.5"}
""")
    run = cli("run", pipeline, "--detach", "--json")
    run_id = json.loads(run.stdout)["id"]
    wait_until(lambda: json.loads(cli("status", run_id, "--json").stdout)["tasks"][0]["status"]
               == "waiting", timeout=20)
    assert cli("stop", "echo").returncode == 0
    wait_until(lambda: json.loads(cli("status", run_id, "--json").stdout)["status"]
               == "succeeded", timeout=30)
    assert "gpu=0" in cli("logs", run_id, "train").stdout


@pytest.mark.parametrize(("args", "message"), [
    (["{missing}"], "no such folder"),
    (["{model}", "--runtime", "vllm"], "pip install vllm"),
    (["{model}", "--runtime", "nope"], "--runtime 'nope' is not a runtime"),
    (["{empty}"], "not a model folder"),
    (["{empty}", "--runtime", "cmd"], "needs a command"),
    (["{empty}", "--runtime", "cmd", "--command", "true", "--public", "--token-secret-env", "X"],
     "exclude each other"),
    (["{empty}", "--runtime", "cmd", "--command", "true", "--replicas", "0"], "replicas"),
    (["{empty}", "--runtime", "cmd", "--command", "true", "--cpu", "64"], "lower --cpu"),
    (["{empty}", "--runtime", "cmd", "--command", "true", "--mem", "lots"], "not a size"),
])
def test_bad_input_is_one_line(cli, tmp_path, tiny_model, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    filled = [a.format(missing=tmp_path / "nothing", model=tiny_model, empty=empty) for a in args]
    done = cli("serve", *filled)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_a_busy_port_and_unknown_services_are_one_line(cli, tmp_path, replica_server, services):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                   "--port", port, "--name", "busy", "--public", timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    for command in (["service", "ghost"], ["token", "ghost"], ["stop", "ghost"]):
        missing = cli(*command)
        assert missing.returncode != 0 and "no service named 'ghost'" in missing.stderr


def test_an_unknown_pre_start_action_is_one_line(cli, tmp_path):
    (tmp_path / "model-definition.yaml").write_text("""
models:
  - name: m
    model_path: /models
    service:
      pre_start_actions: [{action: install_everything}]
      start_command: [python, -m, http.server]
      port: 8080
""")
    done = cli("serve", tmp_path)
    assert done.returncode == 2
    assert "pre_start_actions[0]: unknown action 'install_everything'" in done.stderr


def test_ctrl_c_stops_a_foreground_service_and_its_replicas(
        tmp_path, replica_server, free_port, info, wait_until):
    import os
    import signal
    import subprocess
    import sys

    host = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", str(tmp_path), "--runtime", "cmd",
         "--command", replica_server, "--port", str(free_port), "--name", "echo", "--public"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        def answers() -> bool:
            try:
                return ask(free_port).status_code == 200
            except httpx.TransportError:  # the gateway is not listening yet
                return False

        wait_until(answers, timeout=30)
        replica = info("echo")["replicas"][0]["pid"]
        host.send_signal(signal.SIGINT)
        out, err = host.communicate(timeout=30)
    finally:
        host.kill()
    assert host.returncode == 0, err
    assert f"service echo: http://127.0.0.1:{free_port}/v1" in out
    assert "service echo stopped" in err
    assert start_time(replica) is None
    assert info("echo")["status"] == "STOPPED"


def test_any_free_port_and_asking_a_service(cli, tmp_path, replica_server, services, info):
    started = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                  "--port", "0", "--name", "echo", "--detach")
    assert started.returncode == 0, started.stderr
    port = info("echo")["endpoint"].rsplit(":", 1)[1].split("/")[0]
    assert port != "0" and f"http://127.0.0.1:{port}/v1" in started.stdout
    asked = cli("ask", "echo", "What is FOB?", "What is CIF?", "--json")
    assert asked.returncode == 0, asked.stderr
    answers = json.loads(asked.stdout)
    assert [a["question"] for a in answers] == ["What is FOB?", "What is CIF?"]
    assert [a["answer"] for a in answers] == ["ok", "ok"]
    foreground = cli("serve", tmp_path, "--runtime", "cmd", "--command", "true", "--port", "0")
    assert foreground.returncode == 2 and "needs --detach" in foreground.stderr
