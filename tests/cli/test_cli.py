"""The `conveyor` command as a user runs it: exit codes, JSON shapes, one-line errors."""

from __future__ import annotations

import json
import time

import pytest

OK_PIPELINE = """
    name: cli-demo
    tasks:
    - {name: hello, command: "echo hello $WHO"}
    - {name: after, command: "echo after", dependencies: [hello]}
"""


def assert_one_clean_error(result, *fragments: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr


def test_validate_accepts_a_good_file_and_a_fasttrack_file(cli, write_pipeline, fasttrack_file):
    good = cli("validate", write_pipeline(OK_PIPELINE))
    assert good.returncode == 0 and "2 tasks" in good.stdout
    fasttrack = fasttrack_file
    big = cli("validate", fasttrack, "--capacity", "cpu=16,mem=128g,gpu=16")
    assert big.returncode == 0, big.stderr
    small = cli("validate", fasttrack)
    assert_one_clean_error(small, "torchtune-llama-3.1-8b.pipeline.yaml:27:",
                           "tasks[download-model].resources",
                           "asks for 16g of memory (the machine has 8g)")


def test_validate_reports_each_problem_with_file_and_line(cli, write_pipeline):
    path = write_pipeline("""
        name: broken
        tasks:
        - name: a
          command: "true"
          resources: {cpu: 1, mem: 16x}
          colour: blue
        - name: b
          command: "true"
          dependencies: [nowhere]
    """)
    result = cli("validate", path)
    assert_one_clean_error(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert f"{path}:6: tasks[a].resources.mem: '16x' is not a size" in lines[0]
    assert f"{path}:7: tasks[a].colour: unknown key" in lines[1]
    assert f"{path}:10: tasks[b].dependencies: 'nowhere' is not a task" in lines[2]


@pytest.mark.parametrize("content", ["tasks: [unclosed", "\x00\x01binary", "- just\n- a list"])
def test_files_that_are_not_pipelines_get_one_line(cli, write_pipeline, content):
    path = write_pipeline(content)
    assert_one_clean_error(cli("validate", path), str(path))
    assert_one_clean_error(cli("run", path), str(path))


def test_missing_file_and_unknown_run(cli, tmp_path):
    assert_one_clean_error(cli("run", tmp_path / "nope.yaml"), "no such file")
    assert_one_clean_error(cli("status", "feedbeef"), "'feedbeef' is not a run")
    assert_one_clean_error(cli("logs", "feedbeef", "x"), "'feedbeef' is not a run")
    assert_one_clean_error(cli("cancel", "feedbeef"), "'feedbeef' is not a run")


def test_run_prints_its_id_and_json_and_exit_code(cli, write_pipeline):
    path = write_pipeline(OK_PIPELINE)
    result = cli("run", path, "--json", "--env", "WHO=world")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["id"] in result.stderr
    assert status["pipeline"] == "cli-demo" and status["status"] == "succeeded"
    assert [t["name"] for t in status["tasks"]] == ["hello", "after"]
    first = status["tasks"][0]
    assert {"name", "status", "attempts", "exit_code", "started_at", "finished_at",
            "resources"} <= set(first)
    assert first["resources"]["cpu"] == 1.0 and first["exit_code"] == 0
    logs = cli("logs", status["id"], "hello")
    assert logs.stdout == "hello world\n"


def test_failed_run_exits_1_and_status_shows_it(cli, write_pipeline):
    path = write_pipeline("""
        name: failing
        tasks:
        - {name: bad, command: "exit 5"}
    """)
    result = cli("run", path)
    assert result.returncode == 1
    runs = json.loads(cli("runs", "--json").stdout)
    assert runs[0]["status"] == "failed" and set(runs[0]) == {
        "id", "pipeline", "status", "message", "created_at", "started_at", "finished_at",
        "duration", "started_by"}
    assert runs[0]["started_by"] == "cli" and runs[0]["duration"] >= 0
    status = json.loads(cli("status", runs[0]["id"][:6], "--json").stdout)
    assert status["tasks"][0]["exit_code"] == 5


def test_runs_are_listed_newest_first(cli, write_pipeline):
    path = write_pipeline(OK_PIPELINE)
    ids = [json.loads(cli("run", path, "--json").stdout)["id"] for _ in range(2)]
    listed = [r["id"] for r in json.loads(cli("runs", "--json").stdout)]
    assert listed == ids[::-1]


def test_bad_options_get_one_line(cli, write_pipeline, monkeypatch):
    path = write_pipeline(OK_PIPELINE)
    assert_one_clean_error(cli("run", path, "--skip", "ghost"), "--skip ghost: no such task")
    assert_one_clean_error(cli("run", path, "--env", "NOEQUALS"), "write it as NAME=value")
    assert_one_clean_error(cli("logs", "x"), code=2)  # missing argument: usage error
    assert cli("frobnicate").returncode == 2
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=lots")
    assert_one_clean_error(cli("run", path), "capacity 'cpu=lots'", "example: cpu=8")
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=2")
    monkeypatch.setenv("CONVEYOR_DB_URL", "nosuchdb://x")
    assert_one_clean_error(cli("runs"), "cannot open the store", "CONVEYOR_DB_URL")
    assert runs_left_untouched(cli, monkeypatch)


def runs_left_untouched(cli, monkeypatch) -> bool:
    monkeypatch.delenv("CONVEYOR_DB_URL")
    return json.loads(cli("runs", "--json").stdout) == []


def test_unknown_task_in_logs(cli, write_pipeline):
    run_id = json.loads(cli("run", write_pipeline(OK_PIPELINE), "--json").stdout)["id"]
    assert_one_clean_error(cli("logs", run_id, "ghost"), "has no task 'ghost'", "hello, after")


def test_detach_then_follow_logs(cli, write_pipeline):
    path = write_pipeline("""
        name: background
        tasks:
        - {name: ticks, command: "for i in 1 2 3; do echo tick $i; sleep 0.3; done"}
    """)
    started = time.monotonic()
    result = cli("run", path, "--detach", "--json")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    run_id = json.loads(result.stdout)["id"]
    follow = cli("logs", run_id, "ticks", "--follow", timeout=60)
    assert follow.stdout.splitlines() == ["tick 1", "tick 2", "tick 3"]
    deadline = time.monotonic() + 30
    while json.loads(cli("status", run_id, "--json").stdout)["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_cancel_a_detached_run(cli, write_pipeline):
    path = write_pipeline("""
        name: long
        tasks:
        - {name: sleeper, command: "echo started; sleep 120"}
    """)
    run_id = json.loads(cli("run", path, "--detach", "--json").stdout)["id"]
    deadline = time.monotonic() + 30
    while "started" not in cli("logs", run_id, "sleeper").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    result = cli("cancel", run_id)
    assert result.returncode == 0, result.stderr
    status = json.loads(cli("status", run_id, "--json").stdout)
    assert status["status"] == "cancelled"
    assert status["tasks"][0]["status"] == "cancelled"


def test_resume_after_a_fix(cli, write_pipeline, tmp_path):
    flag = tmp_path / "fixed"
    path = write_pipeline(f"""
        name: fixable
        tasks:
        - {{name: a, command: "echo a"}}
        - {{name: b, command: "test -e {flag}", dependencies: [a]}}
    """)
    first = cli("run", path, "--json")
    assert first.returncode == 1
    run_id = json.loads(first.stdout)["id"]
    flag.touch()
    second = cli("resume", run_id, "--json")
    assert second.returncode == 0, second.stderr
    tasks = {t["name"]: t for t in json.loads(second.stdout)["tasks"]}
    assert tasks["a"]["attempts"] == 1 and tasks["b"]["attempts"] == 2
    again = cli("resume", run_id)
    assert again.returncode == 0 and "already succeeded" in again.stderr
