"""SIGKILL the engine process mid-run: nothing recorded is lost, resume finishes the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.errors import RunBusyError
from conveyor.pipelines.runs import create_run, engine_state
from conveyor.pipelines.scheduler import RunEngine
from conveyor.pipelines.state import RunStatus


def start_engine(run_id: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "conveyor", "engine", run_id],
                            env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def crash_pipeline(write_pipeline, tmp_path):
    pid_file = tmp_path / "task.pid"
    flag = tmp_path / "second-time"
    path = write_pipeline(f"""
        name: crashy
        tasks:
        - {{name: first, command: "echo first done"}}
        - name: slow
          dependencies: [first]
          command: |
            echo "attempt $CONVEYOR_ATTEMPT"
            if [ -e {flag} ]; then echo recovered; exit 0; fi
            touch {flag}
            echo $$ > {pid_file}
            sleep 120
        - {{name: last, command: "echo last done", dependencies: [slow]}}
    """)
    return path, pid_file


def test_sigkill_of_the_engine_then_resume(crash_pipeline, store, settings, wait_until):
    path, pid_file = crash_pipeline
    run_id = create_run(store, settings, path)
    engine = start_engine(run_id)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30)
    wait_until(lambda: any(line.text == "attempt 1" for line in store.read_logs(run_id, "slow")),
               timeout=30)
    task_pid = int(pid_file.read_text())

    engine.send_signal(signal.SIGKILL)
    engine.wait(10)

    run = store.get_run(run_id)
    assert engine_state(run) == "interrupted"
    assert run.task("first").status == "succeeded"
    assert run.task("slow").status == "running"
    assert [line.text for line in store.read_logs(run_id, "first")] == ["first done"]
    assert alive(task_pid), "the task outlives its engine until someone resumes the run"

    assert RunEngine(store, settings, run_id).execute() == RunStatus.SUCCEEDED

    wait_until(lambda: not alive(task_pid), timeout=10)
    run = store.get_run(run_id)
    assert {t.name: t.status for t in run.tasks} == {
        "first": "succeeded", "slow": "succeeded", "last": "succeeded"
    }
    assert run.task("first").attempts == 1, "what succeeded is kept, not re-run"
    assert run.task("slow").attempts == 2
    slow_events = [(e["status"], e["message"]) for e in store.list_events(run_id)
                   if e["task"] == "slow"]
    assert ("failed", "interrupted: the engine running it stopped") in slow_events
    outcomes = [a.outcome for a in store.list_attempts(run_id, "slow")]
    assert outcomes == ["interrupted", "succeeded"]
    texts = [(line.attempt, line.text) for line in store.read_logs(run_id, "slow")]
    assert (1, "attempt 1") in texts and (2, "recovered") in texts


def test_a_second_engine_cannot_take_a_live_run_and_an_abandoned_one_can_be_cancelled(
    crash_pipeline, store, settings, wait_until
):
    path, pid_file = crash_pipeline
    run_id = create_run(store, settings, path)
    engine = start_engine(run_id)
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30)
        with pytest.raises(RunBusyError, match="is being executed by"):
            RunEngine(store, settings, run_id).execute()
        assert store.get_run(run_id).task("slow").attempts == 1
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        RunEngine(store, settings, run_id).cancel_abandoned()
    assert store.get_run(run_id).status == "cancelled"
    task_pid = int(pid_file.read_text())
    wait_until(lambda: not alive(task_pid), timeout=10)


def test_engine_on_postgresql_survives_sigkill(crash_pipeline, postgres_url, monkeypatch,
                                               wait_until):
    from conveyor.settings import load_settings
    from conveyor.store.repository import Store

    monkeypatch.setenv("CONVEYOR_DB_URL", postgres_url)
    settings = load_settings()
    store = Store(settings.db_url)
    try:
        path, pid_file = crash_pipeline
        run_id = create_run(store, settings, path)
        engine = start_engine(run_id)
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30)
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        assert RunEngine(store, settings, run_id).execute() == RunStatus.SUCCEEDED
        run = store.get_run(run_id)
        assert [t.attempts for t in run.tasks] == [1, 2, 1]
        assert [line.text for line in store.read_logs(run_id, "slow", attempt=2)] == [
            "attempt 2", "recovered"]
    finally:
        store.close()
