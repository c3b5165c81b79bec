"""Store: runs, tasks, attempts, events and logs, on every backend."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from conveyor.errors import NotFoundError
from conveyor.store.repository import Store


def new_run(store: Store, tasks=("a", "b"), options: dict | None = None) -> str:
    return store.create_run(
        pipeline="demo", pipeline_file="/p/pipeline.yaml", spec_text="name: demo\n",
        options=options or {}, task_statuses=[(name, "pending", None) for name in tasks],
    )


def log_row(run_id: str, text: str, task: str = "a", attempt: int = 1, at: float = 1.0) -> dict:
    return {"run_id": run_id, "task": task, "attempt": attempt, "rank": 0,
            "stream": "stdout", "at": at, "text": text}


def task_events(store: Store, run_id: str) -> list[tuple]:
    return [(e["task"], e["status"]) for e in store.list_events(run_id) if e["task"]]


# runs


def test_create_and_get_run_round_trip(store: Store) -> None:
    options = {"skip": ["b"], "env": {"A": "1", "Ü": "한국어"}, "capacity": "cpu=2",
               "nested": {"list": [1, 2.5, None, True]}}
    run_id = store.create_run(
        pipeline="demo", pipeline_file="/p/pipeline.yaml", spec_text="name: demo\n",
        options=options,
        task_statuses=[("prepare", "pending", None), ("train", "skipped", "skipped by --skip"),
                       ("eval", "pending", None)],
    )

    run = store.get_run(run_id)

    assert (run.id, run.pipeline, run.pipeline_file, run.spec_text) == (
        run_id, "demo", "/p/pipeline.yaml", "name: demo\n")
    assert run.options == options
    assert run.status == "pending"
    assert run.owner is None and run.cancel_requested is False
    assert run.created_at.tzinfo is not None
    assert [(t.name, t.position, t.status, t.message) for t in run.tasks] == [
        ("prepare", 0, "pending", None),
        ("train", 1, "skipped", "skipped by --skip"),
        ("eval", 2, "pending", None),
    ]
    assert run.task("train").attempts == 0
    with pytest.raises(NotFoundError, match="prepare, train, eval"):
        run.task("nope")
    assert [(e["task"], e["status"]) for e in store.list_events(run_id)] == [
        (None, "pending"), ("prepare", "pending"), ("train", "skipped"), ("eval", "pending")]


def test_get_run_by_unique_prefix_and_errors(store: Store) -> None:
    # 17 ids of hex digits: at least two share their first character
    ids = [new_run(store, tasks=("a",)) for _ in range(17)]
    firsts = Counter(run_id[0] for run_id in ids)
    shared = next(c for c, n in firsts.items() if n > 1)
    target = ids[0]
    unique = next(target[:n] for n in range(1, 13)
                  if sum(other.startswith(target[:n]) for other in ids) == 1)

    assert store.get_run(unique).id == target
    assert store.get_run(target).id == target
    with pytest.raises(NotFoundError, match="is ambiguous"):
        store.get_run(shared)
    with pytest.raises(NotFoundError, match="is not a run"):
        store.get_run("zzzz")
    with pytest.raises(NotFoundError, match="is not a run"):
        store.get_run("%")  # LIKE wildcards are escaped


def test_list_runs_newest_first(store: Store) -> None:
    ids = [new_run(store) for _ in range(4)]

    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(limit=2)] == ids[:1:-1]


def test_set_run_status_stamps_times_and_records_events(store: Store) -> None:
    run_id = new_run(store)

    store.set_run_status(run_id, "running")
    running = store.get_run(run_id)
    store.set_run_status(run_id, "failed", "task b failed")
    failed = store.get_run(run_id)

    assert running.status == "running" and running.started_at is not None
    assert running.finished_at is None
    assert (failed.status, failed.message) == ("failed", "task b failed")
    assert failed.finished_at >= failed.started_at
    run_events = [(e["status"], e["message"]) for e in store.list_events(run_id) if not e["task"]]
    assert run_events == [("pending", None), ("running", None), ("failed", "task b failed")]


def test_claim_run_is_exclusive(store: Store) -> None:
    run_id = new_run(store)

    assert store.claim_run(run_id, "host:1:A", replacing=None)
    assert not store.claim_run(run_id, "host:2:B", replacing=None)
    assert store.heartbeat(run_id, "host:1:A")
    assert not store.heartbeat(run_id, "host:2:B")
    assert store.get_run(run_id).owner == "host:1:A"

    # B takes over from A, which it found dead
    assert store.claim_run(run_id, "host:2:B", replacing="host:1:A")
    assert not store.heartbeat(run_id, "host:1:A")
    assert store.heartbeat(run_id, "host:2:B")
    assert not store.claim_run(run_id, "host:3:C", replacing="host:1:A")
    assert store.get_run(run_id).owner == "host:2:B"

    store.release_run(run_id, "host:1:A")  # not the owner: no effect
    assert store.get_run(run_id).owner == "host:2:B"
    store.release_run(run_id, "host:2:B")
    assert store.get_run(run_id).owner is None
    assert store.claim_run(run_id, "host:3:C", replacing=None)


def test_cancel_request(store: Store) -> None:
    run_id, other = new_run(store), new_run(store)

    assert not store.cancel_requested(run_id)
    store.request_cancel(run_id)

    assert store.cancel_requested(run_id)
    assert store.get_run(run_id).cancel_requested is True
    assert not store.cancel_requested(other)


# tasks and attempts


def test_move_task_is_compare_and_set(store: Store) -> None:
    run_id = new_run(store)

    assert store.move_task(run_id, "a", "pending", "waiting", message="no room")
    assert not store.move_task(run_id, "a", "pending", "running")  # a is no longer pending
    assert not store.move_task(run_id, "nope", "pending", "running")
    assert store.move_task(run_id, "a", "waiting", "cancelled", message="stopped")

    task = store.get_run(run_id).task("a")
    assert (task.status, task.message) == ("cancelled", "stopped")
    assert task_events(store, run_id) == [
        ("a", "pending"), ("b", "pending"), ("a", "waiting"), ("a", "cancelled")]
    assert [e["message"] for e in store.list_events(run_id)][-2:] == ["no room", "stopped"]


def test_begin_attempt_only_once_from_the_same_status(store: Store) -> None:
    run_id = new_run(store)
    resources = {"cpu": 2, "mem": "1g", "gpus": [{"index": 0, "share": 0.5}]}

    first = store.begin_attempt(run_id, "a", "pending", 1, "host-1", resources)
    second = store.begin_attempt(run_id, "a", "pending", 1, "host-2", resources)

    assert isinstance(first, int)
    assert second is None
    task = store.get_run(run_id).task("a")
    assert (task.status, task.attempts, task.resources) == ("running", 1, resources)
    assert task.started_at is not None
    [attempt] = store.list_attempts(run_id, "a")
    assert (attempt.id, attempt.number, attempt.host, attempt.finished_at) == (
        first, 1, "host-1", None)
    assert task_events(store, run_id).count(("a", "running")) == 1


def test_record_processes_round_trip(store: Store) -> None:
    run_id = new_run(store)
    attempt_id = store.begin_attempt(run_id, "a", "pending", 1, "host-1", {})
    processes = [{"rank": 0, "pid": 4242, "started": 1712345678.25},
                 {"rank": 1, "pid": 4243, "started": 1712345678.5}]

    store.record_processes(attempt_id, processes)

    [attempt] = store.open_attempts(run_id)
    assert attempt.processes == processes


def test_finish_attempt_moves_the_task_and_closes_the_attempt(store: Store) -> None:
    run_id = new_run(store)
    attempt_id = store.begin_attempt(run_id, "a", "pending", 1, "host-1", {})
    assert [a.id for a in store.open_attempts(run_id)] == [attempt_id]

    store.finish_attempt(attempt_id, run_id, "a", "failed", 3, "failed", "exit code 3")

    assert store.open_attempts(run_id) == []
    task = store.get_run(run_id).task("a")
    assert (task.status, task.exit_code, task.message) == ("failed", 3, "exit code 3")
    assert task.finished_at is not None
    [attempt] = store.list_attempts(run_id, "a")
    assert (attempt.exit_code, attempt.outcome) == (3, "failed")
    assert attempt.finished_at is not None
    assert task_events(store, run_id)[-2:] == [("a", "running"), ("a", "failed")]


def test_a_retry_opens_a_second_attempt(store: Store) -> None:
    run_id = new_run(store)
    first = store.begin_attempt(run_id, "a", "pending", 1, "h", {})
    store.finish_attempt(first, run_id, "a", "pending", 1, "failed", "retrying")
    assert store.get_run(run_id).task("a").finished_at is None

    second = store.begin_attempt(run_id, "a", "pending", 2, "h", {})
    store.finish_attempt(second, run_id, "a", "succeeded", 0, "succeeded", None)

    assert [(a.number, a.outcome) for a in store.list_attempts(run_id, "a")] == [
        (1, "failed"), (2, "succeeded")]
    task = store.get_run(run_id).task("a")
    assert (task.status, task.attempts, task.exit_code) == ("succeeded", 2, 0)


def test_close_attempt_of_a_dead_engine(store: Store) -> None:
    run_id = new_run(store)
    attempt_id = store.begin_attempt(run_id, "a", "pending", 1, "h", {})

    store.close_attempt(attempt_id, "lost")

    assert store.open_attempts(run_id) == []
    assert store.list_attempts(run_id, "a")[0].outcome == "lost"


def test_racing_begin_attempt_has_exactly_one_winner(store: Store) -> None:
    run_id = new_run(store, tasks=("a",))
    contenders = 8
    barrier = threading.Barrier(contenders)
    results: list = [None] * contenders
    errors: list[BaseException] = []

    def contend(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = store.begin_attempt(run_id, "a", "pending", 1, f"host-{i}", {})
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert [a.id for a in store.list_attempts(run_id, "a")] == winners
    assert task_events(store, run_id).count(("a", "running")) == 1


# logs


def test_logs_keep_order_and_text(store: Store) -> None:
    run_id = new_run(store)
    texts = ["첫 번째 줄: 한국어 로그", "x" * 100_000, "", "tabs\tand trailing spaces  ",
             "emoji 🚀 and accents éü"] + [f"line {i}" for i in range(200)]

    store.append_logs(log_row(run_id, t, at=float(i)) for i, t in enumerate(texts))
    lines = store.read_logs(run_id, "a")

    assert [line.text for line in lines] == texts
    assert [line.at for line in lines] == [float(i) for i in range(len(texts))]
    assert lines == sorted(lines, key=lambda line: line.id)
    assert store.count_logs(run_id, "a") == len(texts)


def test_read_logs_filters_by_task_and_attempt(store: Store) -> None:
    run_id = new_run(store)
    store.append_logs([
        log_row(run_id, "a1 first", attempt=1),
        log_row(run_id, "b1", task="b", attempt=1),
        log_row(run_id, "a2 first", attempt=2),
        log_row(run_id, "a1 second", attempt=1),
        {**log_row(run_id, "a2 err", attempt=2), "stream": "stderr", "rank": 1},
    ])

    assert [line.text for line in store.read_logs(run_id, "a", attempt=1)] == [
        "a1 first", "a1 second"]
    last = store.read_logs(run_id, "a", attempt=2)
    assert [(line.text, line.stream, line.rank) for line in last] == [
        ("a2 first", "stdout", 0), ("a2 err", "stderr", 1)]
    assert [line.text for line in store.read_logs(run_id, "b")] == ["b1"]
    assert store.read_logs(run_id, "c") == []


def test_read_logs_pages_with_after_id(store: Store) -> None:
    run_id = new_run(store)
    texts = [f"line {i}" for i in range(25)]
    store.append_logs(log_row(run_id, t) for t in texts)

    pages, after = [], 0
    while page := store.read_logs(run_id, "a", after_id=after, limit=10):
        pages.append([line.text for line in page])
        after = page[-1].id

    assert [len(p) for p in pages] == [10, 10, 5]
    assert sum(pages, []) == texts
