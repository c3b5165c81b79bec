"""A pipeline task with a `service` block deploys a model service that outlives the run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from conveyor.errors import SpecError
from conveyor.pipelines.spec import parse_pipeline

SERVER = r'''
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        data = json.dumps({"answered_by": os.getpid(), "model_dir": os.getcwd()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def deploy_pipeline(tmp_path, port: int, command: str, startup: str = "20s") -> str:
    return f"""
name: deploy
tasks:
- name: make-model
  command: mkdir -p /home/work/models/tuned && echo weights > /home/work/models/tuned/weights.txt
  mounts: [models]
- name: serve
  dependencies: [make-model]
  mounts: [models]
  resources: {{cpu: 0.5}}
  service:
    name: piped
    model: /home/work/models/tuned
    runtime_variant: cmd
    port: {port}
    open_to_public: true
    startup_timeout: {startup}
    envs: {{CMD: "{command}"}}
"""


def test_the_task_succeeds_once_the_service_is_up_and_the_service_stays(
        cli, tmp_path, write_pipeline, free_port):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    pipeline = write_pipeline(deploy_pipeline(tmp_path, free_port, f"{sys.executable} {script}"))
    try:
        done = cli("run", pipeline, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["status"] == "succeeded"
        service = json.loads(cli("service", "piped", "--json").stdout)
        assert service["status"] == "RUNNING" and service["options"]["cpu"] == 0.5
        answer = httpx.post(f"http://127.0.0.1:{free_port}/v1/chat/completions",
                            json={"model": "piped", "messages": [{"role": "user", "content": "x"}]})
        assert answer.status_code == 200
        storage = Path(os.environ["CONVEYOR_HOME"]) / "folders" / "models" / "tuned"
        assert answer.json()["model_dir"] == str(storage.resolve())  # not the run's work link
    finally:
        cli("stop", "piped")


def test_the_task_fails_when_the_service_never_comes_up(cli, write_pipeline, free_port):
    pipeline = write_pipeline(deploy_pipeline(None, free_port, "exit 3", startup="3s"))
    done = cli("run", pipeline, "--json")
    assert done.returncode != 0
    run = json.loads(done.stdout)
    assert run["status"] == "failed"
    logs = cli("logs", run["id"], "serve").stdout + cli("logs", run["id"], "serve").stderr
    assert "was not up within 3 s" in logs and "exited with code 3" in logs
    assert json.loads(cli("service", "piped", "--json").stdout)["status"] == "STOPPED"


def test_a_task_has_a_command_or_a_service():
    both = """
name: p
tasks:
- name: t
  command: echo
  service: {name: s, model: m}
"""
    neither = "name: p\ntasks:\n- name: t\n"
    for text, words in ((both, "not both"), (neither, "either a `command` or a `service`")):
        with pytest.raises(SpecError) as caught:
            parse_pipeline(text, "p.yaml")
        assert words in " ".join(caught.value.problems)
