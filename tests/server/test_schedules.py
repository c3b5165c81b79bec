"""Cron schedules: ticks by a controllable clock, catch-up after downtime, two servers on one
PostgreSQL database, a real scheduled run, and the /api/schedules routes over real HTTP
(the `api` fixture of tests/server/conftest.py)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from conveyor.pipelines.runs import create_run_from_text
from conveyor.server.scheduler import (
    CronScheduler,
    FieldError,
    check_cron,
    due_ticks,
    new_schedule,
    next_after,
)
from conveyor.store.models import runs
from conveyor.store.repository import Store

PIPELINE = """\
version: "1"
name: nightly
tasks:
- name: hello
  command: echo hi
- name: extra
  command: echo more
  dependencies: [hello]
"""


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2025, 1, 6, hour, minute, second, tzinfo=UTC)


class Clock:
    def __init__(self, moment: datetime):
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def register(store: Store, folder: Path, text: str = PIPELINE, name: str = "nightly") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    store.save_pipeline(name, text, str(folder), None, replace=True)


def recording_starter(store: Store, settings):
    """A start_run that records a run (no engine process): counts what a tick starts."""

    def start(schedule) -> str:
        record = store.get_pipeline(schedule.pipeline)
        return create_run_from_text(store, settings, record.spec_text,
                                    Path(record.directory) / "pipeline.yaml", skip=schedule.skip,
                                    started_by=f"schedule {schedule.id}")

    return start


def run_rows(store: Store) -> list:
    with store._engine.connect() as conn:
        return conn.execute(select(runs.c.id, runs.c.options)).all()


def every_five_minutes(store: Store, settings, tmp_path: Path, start: datetime):
    register(store, tmp_path / "project")
    return store.add_schedule("nightly", "*/5 * * * *", "UTC", ["extra"],
                              next_after("*/5 * * * *", "UTC", start))


def test_a_tick_starts_one_run_and_missed_ticks_are_recorded_not_run(store, settings, tmp_path):
    schedule = every_five_minutes(store, settings, tmp_path, at(10, 0, 30))
    assert schedule.next_due == at(10, 5)
    clock = Clock(at(10, 4))
    scheduler = CronScheduler(store, settings, clock=clock,
                              start_run=recording_starter(store, settings))

    scheduler.tick()
    assert run_rows(store) == []

    clock.moment = at(10, 5, 1)
    scheduler.tick()
    [(run_id, options)] = run_rows(store)
    assert options["started_by"] == f"schedule {schedule.id}"
    assert options["skip"] == ["extra"]
    [tick] = store.list_ticks(schedule.id)
    assert (tick.due_at, tick.outcome, tick.run_id) == (at(10, 5), "started", run_id)

    clock.moment = at(10, 5, 30)
    scheduler.tick()
    assert len(run_rows(store)) == 1

    clock.moment = at(11, 2)
    scheduler.tick()
    assert len(run_rows(store)) == 2
    ticks = store.list_ticks(schedule.id)
    new = [t for t in ticks if t.due_at > at(10, 5)]
    assert [t.due_at for t in new] == [at(11, 0)] + [at(10, m) for m in range(55, 5, -5)]
    assert new[0].outcome == "started"
    assert [t.outcome for t in new[1:]] == ["missed"] * 10
    assert store.get_schedule(schedule.id).next_due == at(11, 5)


def test_a_long_outage_records_the_latest_missed_ticks_only(store, settings, tmp_path):
    ticks, older = due_ticks("* * * * *", "UTC", at(0, 0), at(23, 59, 30))
    assert ticks[-1] == at(23, 59) and len(ticks) == 101 and older
    ticks, older = due_ticks("0 * * * *", "UTC", at(1, 0), at(3, 0))
    assert ticks == [at(1, 0), at(2, 0), at(3, 0)] and not older


def test_cron_reads_in_the_schedules_timezone():
    # 03:00 in Seoul is 18:00 UTC the day before
    assert next_after("0 3 * * *", "Asia/Seoul", at(12, 0)) == at(18, 0)


@pytest.mark.parametrize("cron, named", [
    ("61 * * * *", "minute field '61'"), ("* 24 * * *", "hour field '24'"),
    ("* * 0 * *", "day of month field '0'"), ("* * * 13 *", "month field '13'"),
    ("* * * * funday", "day of week field 'funday'"), ("* * *", "needs 5 fields"),
])
def test_a_bad_cron_names_its_field(cron, named):
    with pytest.raises(FieldError, match=named) as err:
        check_cron(cron)
    assert err.value.field == "cron" and "\n" not in str(err.value)


def test_schedules_need_a_registered_pipeline_and_known_tasks(store, settings, tmp_path):
    with pytest.raises(FieldError, match="register it first: POST /api/pipelines") as err:
        new_schedule(store, settings, "nightly", "0 3 * * *")
    assert err.value.field == "pipeline"
    register(store, tmp_path / "project")
    with pytest.raises(FieldError, match="no task nope in nightly; its tasks: hello, extra"):
        new_schedule(store, settings, "nightly", "0 3 * * *", skip=["nope"])
    with pytest.raises(FieldError, match="timezone 'Mars/Base'"):
        new_schedule(store, settings, "nightly", "0 3 * * *", "Mars/Base")
    with pytest.raises(FieldError, match="matches no date"):
        new_schedule(store, settings, "nightly", "0 0 31 2 *")


def test_a_tick_of_a_removed_pipeline_is_recorded_as_failed(store, settings, tmp_path):
    schedule = every_five_minutes(store, settings, tmp_path, at(10, 0))
    store.delete_pipeline("nightly")
    CronScheduler(store, settings, clock=Clock(at(10, 5))).tick()
    [tick] = store.list_ticks(schedule.id)
    assert tick.outcome == "failed" and "no pipeline 'nightly' is registered" in tick.message
    assert run_rows(store) == []


def race(server: CronScheduler, barrier: threading.Barrier) -> None:
    barrier.wait()
    for _ in range(5):
        server.tick()


def test_two_servers_on_one_postgres_start_one_run_per_tick(postgres_url, settings, tmp_path):
    stores = [Store(postgres_url), Store(postgres_url)]
    try:
        schedule = every_five_minutes(stores[0], settings, tmp_path, at(10, 0))
        clock = Clock(at(10, 0))
        servers = [CronScheduler(s, settings, clock=clock,
                                 start_run=recording_starter(s, settings)) for s in stores]
        for step in range(12):  # one tick at each of 10:05 .. 11:00
            clock.moment = at(10 + (step + 1) // 12, (step + 1) * 5 % 60, 1)
            barrier = threading.Barrier(4)
            threads = [threading.Thread(target=race, args=(servers[i % 2], barrier))
                       for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        ticks = stores[1].list_ticks(schedule.id)
        assert len(ticks) == 12 and {t.outcome for t in ticks} == {"started"}
        assert sorted(t.run_id for t in ticks) == sorted(r.id for r in run_rows(stores[0]))
    finally:
        for s in stores:
            s.close()


def test_a_scheduled_run_really_runs(store, settings, tmp_path, wait_until):
    """The default start_run: the registered pipeline in an engine process of its own."""
    schedule = every_five_minutes(store, settings, tmp_path, at(10, 0))
    CronScheduler(store, settings, clock=Clock(at(10, 5))).tick()
    [tick] = store.list_ticks(schedule.id)
    assert tick.outcome == "started", tick.message
    wait_until(lambda: store.get_run(tick.run_id).status in ("succeeded", "failed"), 60)
    run = store.get_run(tick.run_id)
    assert run.status == "succeeded"
    assert {t.name: t.status for t in run.tasks} == {"hello": "succeeded", "extra": "skipped"}
    assert [line.text for line in store.read_logs(run.id, "hello")] == ["hi"]


def test_the_thread_wakes_for_a_due_schedule_and_stops_promptly(store, settings, tmp_path):
    schedule = every_five_minutes(store, settings, tmp_path, at(10, 0))
    started = threading.Event()

    def start(_schedule) -> str:
        started.set()
        return "r1"

    scheduler = CronScheduler(store, settings, clock=Clock(at(10, 5)), start_run=start,
                              interval=0.2)
    scheduler.start()
    try:
        assert started.wait(10)
    finally:
        begun = time.monotonic()
        scheduler.stop()
    assert time.monotonic() - begun < 2
    assert store.list_ticks(schedule.id)[0].run_id == "r1"


def test_schedules_api(api, store, tmp_path):
    answer = api.post("/api/schedules", json={"pipeline": "nightly", "cron": "0 3 * * *"})
    assert answer.status_code == 400 and answer.json()["field"] == "pipeline"
    assert "register it first" in answer.json()["message"]
    register(store, tmp_path / "project")
    answer = api.post("/api/schedules", json={"pipeline": "nightly", "cron": "0 3 * 13 *"})
    assert answer.status_code == 400 and answer.json()["field"] == "cron"
    assert "month field '13'" in answer.json()["message"]

    answer = api.post("/api/schedules", json={"pipeline": "nightly", "cron": "0 3 * * *",
                                          "skip": ["extra"], "timezone": "Asia/Seoul"})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert {k: created[k] for k in ("pipeline", "cron", "timezone", "skip", "enabled")} == {
        "pipeline": "nightly", "cron": "0 3 * * *", "timezone": "Asia/Seoul",
        "skip": ["extra"], "enabled": True}
    due = datetime.fromisoformat(created["next_due"])
    assert (due.hour, due.minute, due.utcoffset().total_seconds()) == (18, 0, 0)

    assert [s["id"] for s in api.get("/api/schedules").json()] == [created["id"]]
    assert api.get("/api/schedules", params={"pipeline": "other"}).json() == []
    assert api.get(f"/api/schedules/{created['id']}/ticks").json() == []
    assert api.delete(f"/api/schedules/{created['id']}").status_code == 204
    assert api.delete(f"/api/schedules/{created['id']}").status_code == 404
    missing = api.get(f"/api/schedules/{created['id']}/ticks")
    assert missing.status_code == 404 and "no schedule" in missing.json()["message"]


def test_schedule_ticks_api_lists_newest_first(api, store, settings, tmp_path):
    schedule = every_five_minutes(store, settings, tmp_path, at(10, 0))
    CronScheduler(store, settings, clock=Clock(at(10, 16)),
                  start_run=recording_starter(store, settings)).tick()
    ticks = api.get(f"/api/schedules/{schedule.id}/ticks").json()
    assert [(t["due_at"][11:16], t["outcome"]) for t in ticks] == [
        ("10:15", "started"), ("10:10", "missed"), ("10:05", "missed")]
    assert ticks[0]["run_id"] and ticks[1]["run_id"] is None

