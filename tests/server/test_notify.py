"""Webhooks against a real HTTP receiver on loopback: bodies (plain and Slack), retries with
backoff, giving up, secrets kept out of logs, who is told about what, two senders, and the
/api/notifications routes (the `api` fixture of tests/server/conftest.py)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conveyor.server.notify import Notifier, redact
from conveyor.store.times import now

PIPELINE = """\
name: nightly
tasks:
- name: train
  command: |
    echo '{"accuracy": 0.93, "loss": {"train": 0.12}, "model": "tiny", "rows": [1, 2]}' \\
      > "$CONVEYOR_OUTPUT/metrics.json"
- name: check
  command: test -e "$CONVEYOR_OUTPUT/../../../../ok" || exit 3
  dependencies: [train]
- name: publish
  command: echo published
  dependencies: [check]
"""
SECRET = "T000/B000/SECRET-TOKEN"


class Receiver:
    """A webhook endpoint: records bodies; answers `fail_with` to the first `failures` calls."""

    def __init__(self, failures: int = 0, fail_with: int = 500):
        self.bodies: list[dict] = []
        self.failures, self.fail_with = failures, fail_with
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.append(body)
                failing = len(receiver.bodies) <= receiver.failures
                self.send_response(receiver.fail_with if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/{SECRET}?key=hush"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def pipeline(store, write_pipeline) -> Path:
    path = write_pipeline(PIPELINE)
    store.save_pipeline("nightly", PIPELINE, str(path.parent), str(path), replace=False)
    return path


@pytest.fixture
def notifier(store, settings):
    made: list[Notifier] = []

    def make(**kwargs) -> Notifier:
        made.append(Notifier(store, "http://ui.test/", settings=settings, base_delay=0.01,
                             **kwargs))
        return made[-1]

    yield make
    for n in made:
        n.stop()


def deliver(notifier: Notifier) -> int:
    futures = notifier.deliver_pending()
    for future in futures:
        future.result(timeout=60)
    return len(futures)


def succeed_next_runs(tmp_path: Path) -> None:
    """The `check` task passes once this file exists (it is four folders above its output)."""
    (tmp_path / "home" / "ok").touch()


def test_a_succeeded_run_is_told_with_its_tasks_and_metrics(store, settings, tmp_path, pipeline,
                                                            execute, receiver, notifier):
    hook = receiver()
    record = store.add_notification("nightly", hook.url, True, True, False)
    succeed_next_runs(tmp_path)
    run = execute(pipeline)
    assert run.status == "succeeded"

    assert deliver(notifier()) == 1
    [body] = hook.bodies
    assert body["event"] == "run.succeeded" and body["status"] == "succeeded"
    assert (body["run_id"], body["pipeline"]) == (run.id, "nightly")
    assert body["url"] == f"http://ui.test/#/runs/{run.id}"
    assert [t["name"] for t in body["tasks"]] == ["train", "check", "publish"]
    assert all(t["status"] == "succeeded" and t["duration"] >= 0 for t in body["tasks"])
    assert body["failed_tasks"] == [] and body["duration"] > 0
    assert body["started_at"] and body["finished_at"]
    assert body["metrics"] == {"train": {"accuracy": 0.93, "loss.train": 0.12, "model": "tiny"}}
    [delivery] = store.list_deliveries(record.id)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 1, 200)
    assert deliver(notifier()) == 0, "told once"


def test_a_failed_run_names_its_failed_tasks(store, pipeline, execute, receiver, notifier):
    hook = receiver()
    store.add_notification("nightly", hook.url, True, True, False)
    run = execute(pipeline)
    assert run.status == "failed"
    assert deliver(notifier()) == 1
    [body] = hook.bodies
    assert (body["event"], body["status"], body["failed_tasks"]) == (
        "run.failed", "failed", ["check"])
    assert {t["name"]: t["status"] for t in body["tasks"]}["publish"] == "upstream_failed"


def test_slack_format(store, tmp_path, pipeline, execute, receiver, notifier):
    hook = receiver()
    store.add_notification("nightly", hook.url, True, True, True)
    run = execute(pipeline)
    deliver(notifier())
    [body] = hook.bodies
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith(f":x: nightly: run {run.id} failed in ")
    assert "; failed: check" in body["text"]
    assert body["text"].endswith(f" — <http://ui.test/#/runs/{run.id}|open the run>")
    summary, metrics = body["blocks"]
    assert summary == {"type": "section", "text": {"type": "mrkdwn", "text": body["text"]}}
    assert {"type": "mrkdwn", "text": "*train accuracy*\n0.93"} in metrics["fields"]


def test_5xx_is_retried_until_delivered(store, pipeline, execute, receiver, notifier):
    hook = receiver(failures=2)
    record = store.add_notification("nightly", hook.url, True, True, False)
    execute(pipeline)
    deliver(notifier())
    assert len(hook.bodies) == 3 and hook.bodies[0] == hook.bodies[2]
    [delivery] = store.list_deliveries(record.id)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 200)


def test_a_dead_webhook_gives_up_keeps_the_run_and_its_secret(
        store, tmp_path, pipeline, execute, receiver, notifier, caplog):
    caplog.set_level(logging.DEBUG)
    hook = receiver(failures=99, fail_with=503)
    record = store.add_notification("nightly", hook.url, True, True, False)
    succeed_next_runs(tmp_path)
    run = execute(pipeline)
    deliver(notifier(attempts=4))
    assert len(hook.bodies) == 4
    [delivery] = store.list_deliveries(record.id)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 4, 503)
    assert delivery.message == (f"gave up after 4 attempts: {redact(hook.url)} answered 503")
    assert store.get_run(run.id).status == "succeeded"
    assert "SECRET" not in caplog.text and "hush" not in caplog.text
    assert "run %s not told" % run.id in caplog.text


def test_other_4xx_is_not_retried_and_refused_connections_are(
        store, pipeline, execute, receiver, notifier, free_port):
    gone = receiver(failures=99, fail_with=404)
    told_404 = store.add_notification("nightly", gone.url, True, True, False)
    unreachable = store.add_notification("nightly", f"http://127.0.0.1:{free_port}/x", True,
                                         True, False)
    execute(pipeline)
    deliver(notifier(attempts=3))
    assert len(gone.bodies) == 1
    [delivery] = store.list_deliveries(told_404.id)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    [delivery] = store.list_deliveries(unreachable.id)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 3, None)
    assert f"cannot reach http://127.0.0.1:{free_port}/…" in delivery.message


def test_only_the_chosen_outcomes_are_told(store, settings, tmp_path, pipeline, execute,
                                           receiver, notifier):
    failures_only = receiver()
    store.add_notification("nightly", failures_only.url, False, True, False)
    succeed_next_runs(tmp_path)
    execute(pipeline)
    cancelled = execute(pipeline)
    store.set_run_status(cancelled.id, "cancelled", "stopped by a person")
    assert deliver(notifier()) == 0
    assert failures_only.bodies == []


def test_runs_finished_before_the_notification_are_not_told(store, pipeline, execute,
                                                             receiver, notifier):
    execute(pipeline)
    hook = receiver()
    store.add_notification("nightly", hook.url, True, True, False)
    assert deliver(notifier()) == 0


def test_a_resumed_run_is_told_again(store, settings, tmp_path, pipeline, execute, receiver,
                                     notifier):
    from conveyor.pipelines.scheduler import RunEngine

    hook = receiver()
    store.add_notification("nightly", hook.url, True, True, False)
    run = execute(pipeline)
    deliver(notifier())
    succeed_next_runs(tmp_path)
    assert RunEngine(store, settings, run.id).execute() == "succeeded"
    deliver(notifier())
    assert [b["event"] for b in hook.bodies] == ["run.failed", "run.succeeded"]


def test_two_senders_tell_once_and_a_stale_claim_is_taken_over(store, pipeline, execute,
                                                               receiver, notifier):
    hook = receiver()
    store.add_notification("nightly", hook.url, True, True, False)
    execute(pipeline)
    first, second = notifier(), notifier()
    barrier = threading.Barrier(2)
    futures = []

    def race(sender):
        barrier.wait()
        futures.extend(sender.deliver_pending())

    threads = [threading.Thread(target=race, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for future in futures:
        future.result(timeout=30)
    assert len(hook.bodies) == 1

    execute(pipeline)
    [pending] = store.pending_deliveries(stale_before=now())
    assert store.claim_delivery(pending)  # a server claims it and dies
    assert deliver(notifier()) == 0, "a fresh claim is left to its sender"
    assert deliver(notifier(stale_after=0)) == 1
    assert len(hook.bodies) == 2


def test_the_thread_sends_and_stops(store, pipeline, execute, receiver, notifier, wait_until):
    hook = receiver()
    store.add_notification("nightly", hook.url, True, True, False)
    sender = notifier(interval=0.1)
    sender.start()
    execute(pipeline)
    wait_until(lambda: len(hook.bodies) == 1)
    sender.stop()


def test_redact_keeps_scheme_host_and_port_only():
    assert redact("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/…"
    assert redact("http://user:pw@10.0.0.5:8080/a?token=1") == "http://10.0.0.5:8080/…"
    assert redact("http://[::1]:9/x") == "http://[::1]:9/…"


def test_notifications_api(api, store, pipeline, receiver):
    hook = receiver()
    bad = api.post("/api/notifications", json={"pipeline": "nightly", "url": "ftp://x/y"})
    assert bad.status_code == 400 and bad.json()["field"] == "url"
    bad = api.post("/api/notifications", json={"pipeline": "other", "url": hook.url})
    assert bad.status_code == 400 and bad.json()["field"] == "pipeline"
    assert "register it first" in bad.json()["message"]

    answer = api.post("/api/notifications", json={"pipeline": "nightly", "url": hook.url,
                                                  "on_success": False, "slack": True})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["url"] == redact(hook.url) and SECRET not in answer.text
    assert (created["on_success"], created["on_failure"], created["slack"]) == (False, True, True)
    listed = api.get("/api/notifications", params={"pipeline": "nightly"})
    assert [n["id"] for n in listed.json()] == [created["id"]] and SECRET not in listed.text
    assert api.get(f"/api/notifications/{created['id']}/deliveries").json() == []
    assert api.delete(f"/api/notifications/{created['id']}").status_code == 204
    assert api.delete(f"/api/notifications/{created['id']}").status_code == 404
    assert api.get(f"/api/notifications/{created['id']}/deliveries").status_code == 404


def test_deliveries_api(api, store, pipeline, execute, receiver, notifier):
    hook = receiver(failures=1)
    record = store.add_notification("nightly", hook.url, True, True, False)
    run = execute(pipeline)
    deliver(notifier())
    [delivery] = api.get(f"/api/notifications/{record.id}/deliveries").json()
    assert {k: delivery[k] for k in ("run_id", "event", "status", "attempts", "response_code")} \
        == {"run_id": run.id, "event": "run.failed", "status": "delivered", "attempts": 2,
            "response_code": 200}
