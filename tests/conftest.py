"""Every test gets its own CONVEYOR_HOME, a declared machine size and a short kill grace."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from conveyor.pipelines.runs import create_run
from conveyor.pipelines.scheduler import RunEngine
from conveyor.settings import Settings, load_settings
from conveyor.store.repository import RunRecord, Store

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "examples" / "domain-qa" / "data"


@pytest.fixture
def fasttrack_file() -> Path:
    """The real FastTrack pipeline kept in shared/ beside the checkout (as CI lays it out too)."""
    return (Path(__file__).resolve().parents[2] / "shared" / "fasttrack-examples"
            / "torchtune-llama-3.1-8b.pipeline.yaml")


@pytest.fixture(autouse=True)
def conveyor_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CONVEYOR_HOME", str(home))
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=4,mem=8g,gpu=0")
    monkeypatch.setenv("CONVEYOR_KILL_GRACE", "2")
    monkeypatch.delenv("CONVEYOR_DB_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_STORAGE_ROOT", raising=False)
    return home


@pytest.fixture
def settings(conveyor_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings):
    store = Store(settings.db_url)
    yield store
    store.close()


@pytest.fixture
def write_pipeline(tmp_path: Path):
    """Write YAML (dedented) to a pipeline file in its own folder and return the path."""

    def write(text: str, name: str = "pipeline.yaml") -> Path:
        folder = tmp_path / "project"
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def execute(store: Store, settings: Settings):
    """Create a run from a file and drive it to the end in this process."""

    def run(path: Path, **options) -> RunRecord:
        run_id = create_run(store, settings, path, **options)
        RunEngine(store, settings, run_id).execute()
        return store.get_run(run_id)

    return run


@pytest.fixture
def cli(conveyor_home: Path):
    """The real `conveyor` command in a subprocess, with this test's environment."""

    def call(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *map(str, args)],
            capture_output=True, text=True, timeout=timeout, env=dict(os.environ), **kwargs,
        )

    return call



@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def wait_until():
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""

    def wait(condition, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.05)

    return wait


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards; skipped where none runs."""
    name = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 5})
    except ImportError as err:
        pytest.skip(f"no PostgreSQL driver (pip install psycopg[binary]): {err}")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as err:
        admin.dispose()
        reason = str(err.orig or err).splitlines()[0]
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {reason}")
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A Gemma 3 causal LM with hidden size 64 and 2 layers, and a BPE tokenizer trained on the
    sample data: the same code paths as the real model, in seconds."""
    from conveyor.adapt.tiny_model import build_tiny_model

    texts = [p.read_text(encoding="utf-8") for p in SAMPLE_DATA.rglob("*.*")
             if p.suffix in (".json", ".jsonl", ".txt")]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma"), texts)


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The sample data prepared once: OUT/dataset."""
    from conveyor.adapt.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(out, PrepareConfig(), SAMPLE_DATA / "exam", SAMPLE_DATA / "terms",
            SAMPLE_DATA / "transcripts")
    return out / "dataset"


# A process to meter: holds MB megabytes (bytearray zero-fills, so every page is resident) for
# HOLD seconds after burning BURN seconds of CPU time.
LOAD = """
import sys, time
mb, burn, hold = (float(arg) for arg in sys.argv[1:])
block = bytearray(int(mb * 2**20))
start = time.process_time()
while time.process_time() - start < burn:
    pass
time.sleep(hold)
"""


@pytest.fixture
def load(tmp_path: Path):
    """The shell command of a Python process that takes `mb` MB, burns `burn` s, holds `hold` s."""
    script = tmp_path / "load.py"
    script.write_text(LOAD)

    def command(mb: float = 0, burn: float = 0, hold: float = 0) -> str:
        return f"{shlex.quote(sys.executable)} {script} {mb} {burn} {hold}"

    return command


# Model services. A stand-in runtime for the cmd and custom variants: a stdlib HTTP server on $PORT that says
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


# A Ray cluster on this machine: a head and a second node with other resources, on loopback.

RAY_NODES = {
    # the head: 2 CPUs, one (fake) GPU, the custom resource of scaling-group "head-group"
    "head": ["--head", "--num-cpus=2", "--num-gpus=1", '--resources={"head-group": 1000}',
             "--include-dashboard=false"],
    # the second node: 2 CPUs, two fake GPUs, scaling-group "gpu-group"
    "gpu": ["--num-cpus=2", "--num-gpus=2", '--resources={"gpu-group": 1000}'],
}


class RayCluster:
    """Ray processes started for the tests, found by their temp folder and stopped by pid."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_loopback_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray keeps its auth token under ~/.ray: HOME stays inside the test's folder
        self.env = dict(os.environ, HOME=str(root), RAY_USAGE_STATS_ENABLED="0")
        self.node_ids: dict[str, str] = {}

    def start_node(self, args: list[str]) -> None:
        where = [f"--port={self.port}"] if "--head" in args else [f"--address={self.address}"]
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "start", *args, *where,
             "--node-ip-address=127.0.0.1", f"--temp-dir={self.root / 't'}",
             "--disable-usage-stats"],
            env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]

    def node_with(self, resource: str) -> str:
        """The id of the live node that offers `resource`."""
        import ray

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for node in ray.nodes():
                if node["Alive"] and resource in node["Resources"]:
                    return node["NodeID"]
            time.sleep(0.2)
        raise AssertionError(f"no Ray node with {resource} came up")

    def processes(self, marker: str | None = None) -> list:
        import psutil

        marker = marker or str(self.root)
        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            if any(marker in part for part in (process.info["cmdline"] or [])):
                found.append(process)
        return found

    def stop(self) -> None:
        import psutil

        processes = self.processes()
        for process in processes:
            try:
                process.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """Two Ray nodes on loopback for the tests of one module; this process joins as a driver."""
    pytest.importorskip("ray", reason="Ray is not installed; `pip install -e '.[ray]'`")
    import shutil
    import tempfile

    import ray

    # a short path: Ray's unix sockets live under it
    root = Path(tempfile.mkdtemp(prefix="cray-", dir="/tmp"))
    cluster = RayCluster(root)
    home = os.environ.get("HOME")
    os.environ["HOME"] = str(root)
    try:
        cluster.start_node(RAY_NODES["head"])
        ray.init(address=cluster.address, namespace="conveyor", log_to_driver=False,
                 logging_level="ERROR")
        cluster.start_node(RAY_NODES["gpu"])
        cluster.node_ids = {"head": cluster.node_with("head-group"),
                            "gpu": cluster.node_with("gpu-group")}
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home
        shutil.rmtree(root, ignore_errors=True)
