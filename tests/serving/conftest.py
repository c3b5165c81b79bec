from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# A stand-in runtime for the cmd and custom variants: a stdlib HTTP server on $PORT that says
# which replica answered; /health fails while the file named by $SICK_FILE exists.
REPLICA_SERVER = r'''
import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ["PORT"])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        sick = os.path.exists(os.environ.get("SICK_FILE", "/nonexistent"))
        self.answer(503 if sick else 200, {"pid": os.getpid()})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        time.sleep(body.get("sleep", 0))
        self.answer(200, {"pid": os.getpid(), "port": PORT, "model": body["model"],
                          "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "ok"}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
'''


@pytest.fixture
def replica_server(tmp_path: Path) -> str:
    """The shell command that starts one stand-in replica."""
    script = tmp_path / "replica_server.py"
    script.write_text(REPLICA_SERVER)
    return f"{sys.executable} {script}"


@pytest.fixture
def services(cli):
    """Stops, after the test, every service the test left running."""
    yield
    listed = cli("services", "--json")
    for service in json.loads(listed.stdout or "[]"):
        if service["status"] not in ("STOPPED", "FAILED"):
            cli("stop", service["name"])


def service_info(cli, name: str) -> dict:
    done = cli("service", name, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def info(cli):
    return lambda name: service_info(cli, name)


@pytest.fixture
def kill():
    def send(pid: int) -> None:
        subprocess.run(["kill", "-9", str(pid)], check=False)

    return send
