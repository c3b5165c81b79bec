"""What attempts used, from the engine to the store and out again: real runs, the SQLite store."""

from __future__ import annotations

import json
import re

from conveyor.executors.usage import MIB, Usage
from conveyor.pipelines.runs import run_as_json


def test_each_task_records_what_its_last_attempt_used(write_pipeline, execute, store, load):
    path = write_pipeline(f"""
        name: metered
        tasks:
        - {{name: big, command: "{load(mb=200, burn=0.3, hold=1)}"}}
        - name: flaky
          retry: {{max_attempts: 2, delay: 0}}
          command: "test -e done || {{ touch done; {load(burn=0.8)}; exit 1; }}; {load(burn=0.3)}"
    """)
    run = execute(path)
    assert run.status == "succeeded"
    usage = store.run_usage(run.id)
    assert usage["big"]["peak_memory"] >= 180 * MIB and usage["big"]["cpu_seconds"] >= 0.25
    assert usage["big"]["attempt"] == 1 and usage["big"]["gpu_memory"] is None
    assert usage["flaky"]["attempt"] == 2
    assert 0.25 <= usage["flaky"]["cpu_seconds"] < 0.75, "the second attempt, not the first"
    tasks = {t["name"]: t for t in run_as_json(run, usage)["tasks"]}
    assert tasks["big"]["usage"] == usage["big"]
    assert run_as_json(run)["tasks"][0]["usage"] is None


def test_a_multi_node_attempt_uses_the_sum_of_its_nodes(write_pipeline, execute, store, load):
    path = write_pipeline(f"""
        name: nodes
        tasks:
        - name: train
          cluster_mode: multi-node
          cluster_size: 2
          resources: {{cpu: 1}}
          command: "{load(mb=120, burn=0.4, hold=0.8)}"
    """)
    run = execute(path)
    assert run.task("train").status == "succeeded"
    used = store.run_usage(run.id)["train"]
    assert used["peak_memory"] >= 2 * 110 * MIB
    assert used["cpu_seconds"] >= 2 * 0.35


def test_store_round_trip_and_pipeline_aggregate(store):
    def attempt_ids(pipeline: str, task: str, attempts: int) -> tuple[str, list[int]]:
        run_id = store.create_run(pipeline=pipeline, pipeline_file="/p.yaml", spec_text="",
                                  options={}, task_statuses=[(task, "pending", None)])
        ids = []
        for number in range(1, attempts + 1):
            ids.append(store.begin_attempt(run_id, task, "pending", number, "here", {}))
            store.finish_attempt(ids[-1], run_id, task, "pending", 1, "failed", None)
        return run_id, ids

    first, (a1, a2) = attempt_ids("train", "fit", 2)
    store.record_usage(a1, first, "fit", Usage(4.0, 300, None))
    store.record_usage(a2, first, "fit", Usage(2.0, 100, 50))
    assert store.run_usage(first) == {
        "fit": {"cpu_seconds": 2.0, "peak_memory": 100, "gpu_memory": 50, "attempt": 2}}

    second, (b1,) = attempt_ids("train", "fit", 1)
    store.record_usage(b1, second, "fit", Usage(6.0, 200, None))
    other, (c1,) = attempt_ids("other", "fit", 1)
    store.record_usage(c1, other, "fit", Usage(100.0, 10**9, 10**9))

    summary = store.pipeline_task_usage("train")
    assert 0 <= summary["fit"].pop("mean_duration") < 5  # each attempt closed at once
    assert summary == {
        "fit": {"attempts": 3, "mean_cpu_seconds": 4.0, "max_peak_memory": 300,
                "max_gpu_memory": 50}}
    assert store.pipeline_task_usage("nothing") == {}
    assert store.run_usage(other)["fit"]["cpu_seconds"] == 100.0


def test_finish_attempt_records_usage_in_the_same_call(store):
    run_id = store.create_run(pipeline="p", pipeline_file="/p.yaml", spec_text="", options={},
                              task_statuses=[("t", "pending", None)])
    attempt = store.begin_attempt(run_id, "t", "pending", 1, "here", {})
    store.finish_attempt(attempt, run_id, "t", "succeeded", 0, "succeeded", None,
                         usage=Usage(1.25, 4096, None))
    assert store.run_usage(run_id) == {
        "t": {"cpu_seconds": 1.25, "peak_memory": 4096, "gpu_memory": None, "attempt": 1}}


def test_status_shows_cpu_and_peak_memory(cli, write_pipeline, load, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = write_pipeline(f"""
        name: shown
        tasks:
        - {{name: big, command: "{load(mb=200, hold=0.6)}"}}
    """)
    result = cli("run", path, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["tasks"][0]["usage"]["peak_memory"] >= 180 * MIB
    table = cli("status", status["id"])
    assert table.returncode == 0, table.stderr
    assert "cpu" in table.stdout and "peak mem" in table.stdout
    row = next(line for line in table.stdout.splitlines() if " big " in line)
    assert re.search(r"\d\.\ds\s*│\s*2\d\dM\s*│", row), row
