"""`conveyor schedule ...` and `conveyor notify ...` as a user types them."""

from __future__ import annotations

import json

PIPELINE = """\
name: nightly
tasks:
- {name: hello, command: echo hi}
- {name: extra, command: echo more}
"""


def test_schedule_add_list_remove(cli, store, tmp_path):
    missing = cli("schedule", "add", "nightly", "0 3 * * *")
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        "error: pipeline 'nightly' is not registered with the server; register it first:"
        " POST /api/pipelines or the web UI"]
    store.save_pipeline("nightly", PIPELINE, str(tmp_path), None, replace=False)

    bad = cli("schedule", "add", "nightly", "0 3 * * 8")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "day of week field '8'" in bad.stderr

    added = cli("schedule", "add", "nightly", "30 2 * * mon-fri", "--skip", "extra",
                "--timezone", "Asia/Seoul")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("schedule 1: nightly at '30 2 * * mon-fri' (Asia/Seoul)")
    listed = json.loads(cli("schedule", "list", "--json").stdout)
    assert [(s["id"], s["cron"], s["skip"], s["timezone"]) for s in listed] == [
        (1, "30 2 * * mon-fri", ["extra"], "Asia/Seoul")]
    table = cli("schedule", "list").stdout
    assert "nightly" in table and "Asia/Seoul" in table

    assert cli("schedule", "remove", "1").returncode == 0
    assert json.loads(cli("schedule", "list", "--json").stdout) == []
    again = cli("schedule", "remove", "1")
    assert again.returncode == 2 and "there is no schedule 1" in again.stderr


def test_notify_add_list_remove(cli, store, tmp_path):
    store.save_pipeline("nightly", PIPELINE, str(tmp_path), None, replace=False)
    url = "https://hooks.slack.com/services/T0/B0/SECRET"
    added = cli("notify", "add", "nightly", url, "--on", "failure", "--slack")
    assert added.returncode == 0, added.stderr
    assert "SECRET" not in added.stdout and "https://hooks.slack.com/…" in added.stdout
    [shown] = json.loads(cli("notify", "list", "--json").stdout)
    assert {k: shown[k] for k in ("pipeline", "url", "on_success", "on_failure", "slack")} == {
        "pipeline": "nightly", "url": "https://hooks.slack.com/…", "on_success": False,
        "on_failure": True, "slack": True}
    assert "SECRET" not in cli("notify", "list").stdout
    [record] = store.list_notifications()
    assert record.url == url

    both = json.loads(cli("notify", "add", "nightly", "http://127.0.0.1:9/h", "--json").stdout)
    assert (both["on_success"], both["on_failure"], both["slack"]) == (True, True, False)
    bad = cli("notify", "add", "nightly", "hooks.example.com/x")
    assert bad.returncode == 2 and "http:// or https://" in bad.stderr

    assert cli("notify", "remove", str(shown["id"])).returncode == 0
    assert [n["id"] for n in json.loads(cli("notify", "list", "--json").stdout)] == [both["id"]]
