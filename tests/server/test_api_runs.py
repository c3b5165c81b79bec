"""/api/runs over real HTTP: runs start in their own engine, stream live, and show artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

WRITER = textwrap.dedent("""\
    name: writer
    tasks:
    - name: produce
      command: |
        echo "line one"
        echo "to stderr" >&2
        mkdir -p "$CONVEYOR_OUTPUT/plots"
        printf 'PNG?' > "$CONVEYOR_OUTPUT/plots/loss.png"
        echo '<h1>report</h1>' > "$CONVEYOR_OUTPUT/report.html"
        echo '{"semscore": 0.5}' > "$CONVEYOR_OUTPUT/metrics.json"
        ln -s /etc/hostname "$CONVEYOR_OUTPUT/escape"
        sleep 0.3  # long enough to be seen by the usage meter's samples
    - name: after
      command: echo "done $GREETING"
      dependencies: [produce]
    """)

SLOW = textwrap.dedent("""\
    name: slow
    tasks:
    - name: wait
      command: echo started; sleep 60
    """)


def register(api, text: str) -> None:
    reply = api.post("/api/pipelines", json={"yaml": text})
    assert reply.status_code == 201, reply.text


def start(api, pipeline: str, **options) -> dict:
    reply = api.post("/api/runs", json={"pipeline": pipeline, **options})
    assert reply.status_code == 201, reply.text
    return reply.json()


def wait_for(api, wait_until, run_id: str, statuses: tuple[str, ...], timeout=60) -> dict:
    seen: dict = {}

    def reached() -> bool:
        seen.update(api.get(f"/api/runs/{run_id}").json())
        return seen["status"] in statuses

    wait_until(reached, timeout=timeout)
    return seen


def test_a_run_started_here_executes_and_shows_its_output(api, wait_until):
    register(api, WRITER)
    run = start(api, "writer", env={"GREETING": "hi"})
    assert run["status"] == "pending" and run["started_by"] == "api"
    assert run["dependencies"] == {"produce": [], "after": ["produce"]}
    done = wait_for(api, wait_until, run["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    produce = next(t for t in done["tasks"] if t["name"] == "produce")
    assert produce["duration"] >= 0 and produce["resources"]["cpu"] == 1
    assert produce["usage"]["peak_memory"] > 0 and produce["usage"]["attempt"] == 1

    logs = api.get(f"/api/runs/{run['id']}/tasks/produce/logs").json()
    assert [(line["stream"], line["text"]) for line in logs["lines"]] == [
        ("stdout", "line one"), ("stderr", "to stderr")] or sorted(
        line["text"] for line in logs["lines"]) == ["line one", "to stderr"]
    assert logs["finished"] is True
    after = api.get(f"/api/runs/{run['id']}/tasks/after/logs").json()["lines"]
    assert [line["text"] for line in after] == ["done hi"]

    listed = api.get("/api/runs", params={"pipeline": "writer"}).json()
    assert [r["id"] for r in listed] == [run["id"]]
    assert api.get("/api/runs", params={"status": "failed"}).json() == []
    assert api.get("/api/pipelines").json()[0]["last_run"]["status"] == "succeeded"
    usage = api.get("/api/pipelines/writer/usage").json()
    assert (usage["runs"], usage["outcomes"]) == (1, {"succeeded": 1})
    assert [h["id"] for h in usage["history"]] == [run["id"]]
    assert usage["tasks"]["produce"]["attempts"] == 1
    assert usage["tasks"]["produce"]["mean_duration"] >= 0


def test_artifacts_list_download_and_never_escape(api, wait_until):
    register(api, WRITER)
    run = start(api, "writer")
    wait_for(api, wait_until, run["id"], ("succeeded",))
    base = f"/api/runs/{run['id']}/tasks/produce/artifacts"
    listed = {a["path"]: a["kind"] for a in api.get(base).json()}
    assert listed == {"metrics.json": "text", "plots/loss.png": "image",
                      "report.html": "html"}  # the link out of the folder is not listed
    image = api.get(f"{base}/plots/loss.png")
    assert image.status_code == 200 and image.content == b"PNG?"
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")
    assert "sandbox" in api.get(f"{base}/report.html").headers["content-security-policy"]
    for escape in ("escape", "..%2F..%2F..%2F..%2F..%2Fconveyor.db", "plots%2F..%2F..%2Fafter"):
        reply = api.get(f"{base}/{escape}")
        assert reply.status_code == 404, escape
        assert reply.json()["field"] == "path"


def test_live_events_end_with_the_finished_run(api, wait_until):
    register(api, WRITER)
    run = start(api, "writer")
    statuses = []
    with api.stream("GET", f"/api/runs/{run['id']}/events", timeout=60) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "run":
                statuses.append(json.loads(line.removeprefix("data: "))["status"])
    assert statuses[-1] == "succeeded"
    assert len(statuses) >= 2  # at least one change was seen live before the end


def test_the_log_stream_follows_a_running_task_to_its_end(api, wait_until):
    register(api, textwrap.dedent("""\
        name: talker
        tasks:
        - name: talk
          command: for i in 1 2 3; do echo "tick $i"; sleep 0.4; done
        """))
    run = start(api, "talker")
    texts, ended = [], None
    with api.stream("GET", f"/api/runs/{run['id']}/tasks/talk/logs/stream",
                    timeout=60) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                if event == "line":
                    texts.append(data["text"])
                else:
                    ended = data
    assert texts == ["tick 1", "tick 2", "tick 3"]
    assert ended == {"status": "succeeded"}


def test_cancel_then_resume(api, wait_until):
    register(api, SLOW)
    run = start(api, "slow")
    wait_until(lambda: api.get(f"/api/runs/{run['id']}/tasks/wait/logs").json()["lines"],
               timeout=30)
    reply = api.post(f"/api/runs/{run['id']}/cancel")
    assert reply.status_code == 202
    done = wait_for(api, wait_until, run["id"], ("cancelled",), timeout=30)
    assert done["tasks"][0]["status"] == "cancelled"
    resumed = api.post(f"/api/runs/{run['id']}/resume")
    assert resumed.status_code == 202 and resumed.json()["status"] == "pending"
    wait_until(lambda: api.get(f"/api/runs/{run['id']}").json()["tasks"][0]["status"]
               == "running", timeout=30)
    busy = api.post(f"/api/runs/{run['id']}/resume")
    assert busy.status_code == 409
    api.post(f"/api/runs/{run['id']}/cancel")
    wait_for(api, wait_until, run["id"], ("cancelled",), timeout=30)


def test_bad_run_requests_are_json_errors(api):
    register(api, WRITER)
    unknown = api.post("/api/runs", json={"pipeline": "nope"})
    assert unknown.status_code == 404
    skip = api.post("/api/runs", json={"pipeline": "writer", "skip": ["nope"]})
    assert skip.status_code == 400 and "nope" in skip.json()["message"]
    assert api.get("/api/runs/zzzz").status_code == 404
    assert api.get("/api/runs", params={"limit": 5}).json() == []


def test_a_run_from_the_cli_shows_in_the_api(api, cli, write_pipeline):
    path = write_pipeline(WRITER)
    assert cli("run", path).returncode == 0
    runs = api.get("/api/runs").json()
    assert [(r["pipeline"], r["status"], r["started_by"]) for r in runs] == [
        ("writer", "succeeded", "cli")]


def test_with_a_token_every_change_asks_for_it(start_server):
    server = start_server(token="s3cret")
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/api/info").json()["token_required"] is True
        refused = client.post("/api/pipelines", json={"yaml": SLOW})
        assert refused.status_code == 401 and refused.json()["field"] == "authorization"
        wrong = client.post("/api/pipelines", json={"yaml": SLOW},
                            headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = client.post("/api/pipelines", json={"yaml": SLOW},
                              headers={"authorization": "Bearer s3cret"})
        assert allowed.status_code == 201
        assert client.get("/api/pipelines").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_the_server_refuses_the_network_without_a_token(cli, host, monkeypatch):
    monkeypatch.delenv("CONVEYOR_SERVER_TOKEN", raising=False)
    result = cli("server", "--host", host, "--port", "0", timeout=60)
    assert result.returncode == 2
    assert "CONVEYOR_SERVER_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert os.environ.get("CONVEYOR_SERVER_TOKEN") is None


def test_runs_go_on_while_the_server_restarts(tmp_path, free_port, wait_until):
    """The server process dies mid-run (SIGKILL); the run's engine is a process of its own."""
    url = f"http://127.0.0.1:{free_port}"

    def serve():
        process = subprocess.Popen([sys.executable, "-m", "conveyor", "server", "--port",
                                    str(free_port)], env=dict(os.environ),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers(f"{url}/api/info"), timeout=30)
        return process

    server = serve()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            register(client, SLOW.replace("sleep 60", "sleep 3"))
            run = start(client, "slow")
            wait_until(lambda: client.get(f"/api/runs/{run['id']}").json()["status"]
                       == "running", timeout=30)
        server.kill()
        server.wait(10)
        server = serve()
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get(f"/api/runs/{run['id']}").json()["status"] in ("running",
                                                                             "succeeded")
            wait_until(lambda: client.get(f"/api/runs/{run['id']}").json()["status"]
                       == "succeeded", timeout=30)
    finally:
        server.kill()
        server.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
