"""The engine end to end with the local executor and the SQLite store: real processes, real files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from conveyor.pipelines.runs import create_run
from conveyor.pipelines.scheduler import RunEngine
from conveyor.pipelines.state import RunStatus


def by_name(run) -> dict[str, str]:
    return {task.name: task.status for task in run.tasks}


def spans(folder: Path) -> dict[str, tuple[float, float]]:
    """Start and end times that tasks wrote as `<name>.span` files."""
    result = {}
    for file in folder.glob("*.span"):
        start, end = file.read_text().split()
        result[file.stem] = (float(start), float(end))
    return result


def span_command(name: str, seconds: float, folder: Path) -> str:
    return f's=$(date +%s.%N); sleep {seconds}; echo "$s $(date +%s.%N)" > {folder}/{name}.span'


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_tasks_run_in_dependency_order_and_fan_out_in_parallel(write_pipeline, execute, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    path = write_pipeline(f"""
        name: fan
        tasks:
        - {{name: join, command: '{span_command('join', 0.1, marks)}', dependencies: [left, right]}}
        - {{name: left, command: '{span_command('left', 0.6, marks)}', dependencies: [root]}}
        - {{name: right, command: '{span_command('right', 0.6, marks)}', dependencies: [root]}}
        - {{name: root, command: '{span_command('root', 0.1, marks)}'}}
    """)
    run = execute(path)
    assert run.status == "succeeded"
    assert set(by_name(run).values()) == {"succeeded"}
    t = spans(marks)
    assert t["root"][1] <= t["left"][0] and t["root"][1] <= t["right"][0]
    assert max(t["left"][1], t["right"][1]) <= t["join"][0]
    assert overlaps(t["left"], t["right"]), "independent tasks should run together"


def test_capacity_limits_parallelism(write_pipeline, execute, tmp_path, monkeypatch, store):
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=1,mem=1g,gpu=0")
    marks = tmp_path / "marks"
    marks.mkdir()
    path = write_pipeline(f"""
        name: narrow
        tasks:
        - {{name: a, command: '{span_command('a', 0.4, marks)}', resources: {{cpu: 1}}}}
        - {{name: b, command: '{span_command('b', 0.4, marks)}', resources: {{cpu: 1}}}}
    """)
    from conveyor.settings import load_settings

    settings = load_settings()
    run_id = create_run(store, settings, path)
    RunEngine(store, settings, run_id).execute()
    t = spans(marks)
    assert not overlaps(t["a"], t["b"]), "a 1-CPU machine runs one 1-CPU task at a time"
    events = [(e["task"], e["status"]) for e in store.list_events(run_id)]
    assert ("b", "waiting") in events or ("a", "waiting") in events


def test_fractional_gpu_shares_pack_two_tasks_on_one_device(
    write_pipeline, store, tmp_path, monkeypatch
):
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=8,mem=8g,gpu=1")
    from conveyor.settings import load_settings

    settings = load_settings()
    marks = tmp_path / "marks"
    marks.mkdir()
    tasks = "\n".join(
        f"- {{name: {n}, resources: {{cuda.shares: 0.5}}, command: "
        f"'echo $CUDA_VISIBLE_DEVICES $CONVEYOR_GPU_SHARES > {marks}/{n}.gpu; "
        f"{span_command(n, 0.5, marks)}'}}"
        for n in ("g1", "g2", "g3")
    )
    path = write_pipeline("name: gpus\ntasks:\n" + tasks + "\n")
    run_id = create_run(store, settings, path)
    RunEngine(store, settings, run_id).execute()
    run = store.get_run(run_id)
    assert run.status == "succeeded"
    assert {(marks / f"{n}.gpu").read_text().strip() for n in ("g1", "g2", "g3")} == {"0 0.5"}
    t = spans(marks)
    pairs = [("g1", "g2"), ("g1", "g3"), ("g2", "g3")]
    together = [p for p in pairs if overlaps(t[p[0]], t[p[1]])]
    # intervals that overlap pairwise share a moment: never all three at once, but two did share
    assert 1 <= len(together) < 3, f"two tasks share the GPU, the third waits; got {together}"
    assert run.task("g1").resources["gpus"] == [{"index": 0, "share": 0.5}]


def test_a_gpu_if_available_runs_on_the_cpu_where_there_is_none(write_pipeline, execute):
    path = write_pipeline("""
        name: laptop
        tasks:
        - name: train
          command: echo "gpus=[$CONVEYOR_GPU_SHARES]"
          resources: {cpu: 1, cuda.shares: 0.5}
          resource_opts: {gpu: if-available}
        """)
    run = execute(path)  # without `if-available`, the file is refused on this machine
    assert run.task("train").status == "succeeded"
    assert run.task("train").resources["gpu_shares"] == 0


def test_skipped_task_lets_dependents_run(write_pipeline, execute):
    path = write_pipeline("""
        name: skipping
        tasks:
        - {name: prepare, command: "exit 3", skip: true}
        - {name: train, command: "echo trained", dependencies: [prepare]}
    """)
    run = execute(path)
    assert by_name(run) == {"prepare": "skipped", "train": "succeeded"}
    assert run.status == "succeeded"


def test_skip_and_only_options(write_pipeline, execute):
    path = write_pipeline("""
        name: choose
        tasks:
        - {name: a, command: "exit 1"}
        - {name: b, command: "true", dependencies: [a]}
        - {name: c, command: "exit 1"}
    """)
    run = execute(path, skip=["a"], only=["a", "b"])
    assert by_name(run) == {"a": "skipped", "b": "succeeded", "c": "skipped"}
    assert run.task("a").message == "skipped with --skip"
    assert run.task("c").message == "not chosen with --only"


def test_failure_marks_dependents_upstream_failed(write_pipeline, execute):
    path = write_pipeline("""
        name: failing
        tasks:
        - {name: a, command: "echo boom >&2; exit 4"}
        - {name: b, command: "true", dependencies: [a]}
        - {name: c, command: "true", dependencies: [b]}
        - {name: other, command: "true"}
    """)
    run = execute(path)
    assert run.status == "failed"
    assert by_name(run) == {"a": "failed", "b": "upstream_failed", "c": "upstream_failed",
                            "other": "succeeded"}
    assert run.task("a").exit_code == 4
    assert run.task("a").message == "exit code 4"


def test_continue_on_failure_lets_dependents_run(write_pipeline, execute):
    path = write_pipeline("""
        name: tolerant
        tasks:
        - {name: flaky, command: "exit 1", continue_on_failure: true}
        - {name: after, command: "true", dependencies: [flaky]}
    """)
    run = execute(path)
    assert by_name(run) == {"flaky": "failed", "after": "succeeded"}
    assert run.status == "succeeded"


def test_retry_runs_again_after_the_delay(write_pipeline, execute, store, tmp_path):
    counter = tmp_path / "count"
    path = write_pipeline(f"""
        name: retrying
        tasks:
        - name: flaky
          command: |
            echo x >> {counter}
            [ $(wc -l < {counter}) -ge 3 ]
          retry: {{max_attempts: 3, delay: 0.3s}}
    """)
    started = time.monotonic()
    run = execute(path)
    assert run.task("flaky").status == "succeeded"
    assert run.task("flaky").attempts == 3
    assert time.monotonic() - started >= 0.6, "two delays of 0.3s between three attempts"
    outcomes = [a.outcome for a in store.list_attempts(run.id, "flaky")]
    assert outcomes == ["failed", "failed", "succeeded"]


def test_retries_exhausted_fail_the_task(write_pipeline, execute):
    path = write_pipeline("""
        name: hopeless
        tasks:
        - {name: t, command: "exit 2", retry: {max_attempts: 2}}
    """)
    run = execute(path)
    assert run.task("t").status == "failed"
    assert run.task("t").attempts == 2


def test_timeout_kills_the_whole_process_group(write_pipeline, execute, tmp_path):
    pids = tmp_path / "pids"
    path = write_pipeline(f"""
        name: slow
        tasks:
        - name: t
          timeout: 1
          command: |
            sleep 60 &
            echo $! > {pids}
            sleep 60
    """)
    started = time.monotonic()
    run = execute(path)
    assert time.monotonic() - started < 20
    task = run.task("t")
    assert task.status == "failed"
    assert task.message == "timed out after 1s"
    background = int(pids.read_text())
    assert not Path(f"/proc/{background}").exists() or _is_zombie(background)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_multi_node_task_starts_one_process_per_node(write_pipeline, execute, tmp_path):
    marks = tmp_path / "ranks"
    marks.mkdir()
    path = write_pipeline(f"""
        name: cluster
        tasks:
        - name: train
          cluster_mode: multi-node
          cluster_size: 3
          resources: {{cpu: 1}}
          command: >
            echo "$CONVEYOR_CLUSTER_SIZE $BACKENDAI_CLUSTER_SIZE $BACKENDAI_CLUSTER_LOCAL_RANK
            $CONVEYOR_CLUSTER_MAIN $BACKENDAI_CLUSTER_HOST" > {marks}/$CONVEYOR_CLUSTER_RANK
    """)
    run = execute(path)
    assert run.task("train").status == "succeeded"
    lines = {f.name: f.read_text().split() for f in marks.iterdir()}
    assert lines == {
        "0": ["3", "3", "0", "127.0.0.1", "main1"],
        "1": ["3", "3", "1", "127.0.0.1", "sub1"],
        "2": ["3", "3", "2", "127.0.0.1", "sub2"],
    }
    assert len(run.task("train").resources["nodes"]) == 3


def test_multi_node_failure_of_one_node_stops_the_others(write_pipeline, execute):
    path = write_pipeline("""
        name: cluster
        tasks:
        - name: train
          cluster_mode: multi-node
          cluster_size: 2
          command: |
            if [ "$CONVEYOR_CLUSTER_RANK" = 1 ]; then exit 7; fi
            sleep 60
    """)
    started = time.monotonic()
    run = execute(path)
    assert time.monotonic() - started < 20
    assert run.task("train").status == "failed"
    assert "node 1 failed (exit code 7)" in run.task("train").message


def test_cancel_stops_running_and_waiting_tasks(write_pipeline, store, settings, wait_until):
    path = write_pipeline("""
        name: long
        tasks:
        - {name: a, command: "sleep 60"}
        - {name: b, command: "true", dependencies: [a]}
    """)
    run_id = create_run(store, settings, path)
    engine = RunEngine(store, settings, run_id)
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(engine.execute()))
    worker.start()
    wait_until(lambda: store.get_run(run_id).task("a").status == "running")
    engine.cancel()
    worker.join(20)
    assert outcome == [RunStatus.CANCELLED]
    run = store.get_run(run_id)
    assert by_name(run) == {"a": "cancelled", "b": "cancelled"}
    assert run.status == "cancelled"


def test_cancel_requested_through_the_store_by_another_process(write_pipeline, store, settings,
                                                               wait_until):
    path = write_pipeline("""
        name: long
        tasks:
        - {name: a, command: "sleep 60"}
    """)
    run_id = create_run(store, settings, path)
    outcome = []
    worker = threading.Thread(
        target=lambda: outcome.append(RunEngine(store, settings, run_id).execute())
    )
    worker.start()
    wait_until(lambda: store.get_run(run_id).task("a").status == "running")
    store.request_cancel(run_id)
    worker.join(20)
    assert outcome == [RunStatus.CANCELLED]


def test_resume_reruns_only_what_did_not_succeed(write_pipeline, store, settings, tmp_path):
    flag = tmp_path / "fixed"
    log = tmp_path / "log"
    path = write_pipeline(f"""
        name: fixable
        tasks:
        - {{name: a, command: "echo a >> {log}"}}
        - {{name: b, command: "echo b >> {log}; test -e {flag}", dependencies: [a]}}
        - {{name: c, command: "echo c >> {log}", dependencies: [b]}}
    """)
    run_id = create_run(store, settings, path)
    assert RunEngine(store, settings, run_id).execute() == RunStatus.FAILED
    flag.touch()
    assert RunEngine(store, settings, run_id).execute() == RunStatus.SUCCEEDED
    assert log.read_text().split() == ["a", "b", "b", "c"]
    run = store.get_run(run_id)
    assert run.task("a").attempts == 1 and run.task("b").attempts == 2


def test_output_is_stored_in_order_with_both_streams(write_pipeline, execute, store):
    path = write_pipeline("""
        name: talk
        tasks:
        - name: t
          command: |
            for i in $(seq 1 300); do echo "out $i"; done
            echo "to stderr" >&2
            printf 'bad \\xff\\xfe bytes\\n'
            printf 'no newline at the end'
    """)
    run = execute(path)
    lines = store.read_logs(run.id, "t")
    out = [line.text for line in lines if line.stream == "stdout"]
    assert out[:300] == [f"out {i}" for i in range(1, 301)]
    assert out[300:] == ["bad \\xff\\xfe bytes", "no newline at the end"]
    assert [line.text for line in lines if line.stream == "stderr"] == ["to stderr"]
    assert all(line.at > 0 for line in lines)


def test_megabytes_of_output_are_kept(write_pipeline, execute, store):
    path = write_pipeline("""
        name: loud
        tasks:
        - {name: t, command: "seq 1 100000 | sed 's/$/ 0123456789abcdef0123456789abcdef0123456789abcdef/'"}
    """)
    run = execute(path)
    assert run.task("t").status == "succeeded"
    assert store.count_logs(run.id, "t") == 100_000


def test_missing_command_and_signal_are_recorded(write_pipeline, execute, store):
    path = write_pipeline("""
        name: broken
        tasks:
        - {name: missing, command: "no-such-command-anywhere --flag"}
        - {name: killed, command: "kill -9 $$"}
    """)
    run = execute(path)
    assert run.task("missing").status == "failed"
    assert run.task("missing").exit_code == 127
    assert "not found" in store.read_logs(run.id, "missing")[0].text
    assert run.task("killed").status == "failed"
    assert run.task("killed").exit_code == 137
    assert run.task("killed").message == "killed by SIGKILL"


def test_workdir_defaults_to_the_pipeline_folder(write_pipeline, execute, store):
    path = write_pipeline("""
        name: where
        tasks:
        - {name: here, command: "pwd"}
        - {name: there, command: "pwd", workdir: sub}
    """)
    (path.parent / "sub").mkdir()
    run = execute(path)
    assert store.read_logs(run.id, "here")[0].text == str(path.parent)
    assert store.read_logs(run.id, "there")[0].text == str(path.parent / "sub")


def test_output_is_readable_while_the_task_runs(write_pipeline, store, settings,
                                                wait_until):
    path = write_pipeline("""
        name: chatty
        tasks:
        - {name: t, command: "echo early; sleep 30"}
    """)
    run_id = create_run(store, settings, path)
    engine = RunEngine(store, settings, run_id)
    worker = threading.Thread(target=engine.execute)
    worker.start()
    try:
        wait_until(lambda: [line.text for line in store.read_logs(run_id, "t")] == ["early"])
        assert store.get_run(run_id).task("t").status == "running"
    finally:
        engine.cancel()
        worker.join(20)


def test_a_session_that_cannot_be_prepared_fails_the_task(write_pipeline, execute, settings):
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    (settings.storage_root / "taken").write_text("a file where a folder should be")
    path = write_pipeline("""
        name: unpreparable
        tasks:
        - {name: t, command: "sleep 30", mounts: [taken], cluster_mode: multi-node, cluster_size: 2}
    """)
    started = time.monotonic()
    run = execute(path)
    assert run.task("t").status == "failed"
    assert "could not prepare the session" in run.task("t").message
    assert time.monotonic() - started < 20
