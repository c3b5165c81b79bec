"""Cron schedules: each tick of a schedule starts one run, once, even with two servers on one
database.

A daemon thread wakes when the soonest schedule is due (at least every `interval` seconds) and
calls `tick()`. A tick is taken by moving the schedule's `next_due` on with a compare-and-set,
so only one server handles it. Catch-up policy: ticks that passed while no server ran are
recorded as `missed` and not run; only the latest due tick starts a run, so a server that was
down all night starts one run, not eight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from conveyor.errors import ConveyorError, NotFoundError, UsageError
from conveyor.pipelines.runs import start_registered_run
from conveyor.pipelines.spec import parse_pipeline
from conveyor.settings import Settings
from conveyor.store.pipelines import PipelineRecord
from conveyor.store.repository import Store
from conveyor.store.schedules import ScheduleRecord
from conveyor.store.times import now

log = logging.getLogger(__name__)

MISSED_KEPT = 100  # missed ticks recorded one by one before the latest; older ones are summed up
CRON_FIELDS = (("minute", "0-59"), ("hour", "0-23"), ("day of month", "1-31"),
               ("month", "1-12 or jan-dec"), ("day of week", "0-6 or sun-sat"))


class FieldError(UsageError):
    """A schedule or notification that cannot be made; `field` names the part at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_cron(expr: str) -> None:
    """Five fields (or croniter's @daily and kin); a bad one is named with its range."""
    parts = expr.split()
    if len(parts) == 1 and expr.startswith("@") and croniter.is_valid(expr):
        return
    if len(parts) != 5:
        raise FieldError("cron", f"cron {expr!r}: needs 5 fields (minute hour day-of-month"
                                 f" month day-of-week), not {len(parts)}")
    for i, (name, allowed) in enumerate(CRON_FIELDS):
        alone = ["*"] * 5
        alone[i] = parts[i]
        if not croniter.is_valid(" ".join(alone)):
            raise FieldError("cron", f"cron {expr!r}: the {name} field {parts[i]!r} is not"
                                     f" valid; it takes {allowed}, lists, ranges and */N")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FieldError("timezone", f"timezone {name!r} is not known; give an IANA name"
                                     " such as UTC or Asia/Seoul") from None


def next_after(cron: str, timezone: str, moment: datetime) -> datetime:
    """The first tick strictly after `moment`, in UTC; the cron reads in `timezone`."""
    try:
        due = croniter(cron, moment.astimezone(zone(timezone))).get_next(datetime)
    except CroniterBadDateError:
        raise FieldError("cron", f"cron {cron!r} matches no date") from None
    return due.astimezone(UTC)


def due_ticks(cron: str, timezone: str, first: datetime, until: datetime) -> tuple[list, bool]:
    """Ticks from `first` to `until`, oldest first: the latest and up to MISSED_KEPT before it;
    True if older ones were left out. Counted back from `until`, so a long outage costs little."""
    back = croniter(cron, (until.replace(microsecond=0) + timedelta(seconds=1))
                    .astimezone(zone(timezone)))
    ticks: list[datetime] = []
    while True:
        due = back.get_prev(datetime).astimezone(UTC)
        if due < first:
            return (ticks or [first])[::-1], False  # [first]: a DST fold counted past it
        if len(ticks) > MISSED_KEPT:
            return ticks[::-1], True
        ticks.append(due)


def new_schedule(store: Store, settings: Settings, pipeline: str, cron: str,
                 timezone: str = "UTC", skip: list[str] = ()) -> ScheduleRecord:
    """Check a schedule (cron, zone, registered pipeline, task names) and store it."""
    check_cron(cron)
    first = next_after(cron, timezone, now())
    record = registered(store, pipeline)
    names = [t.name for t in parse_pipeline(record.spec_text, str(record.run_file)).tasks]
    unknown = [name for name in skip if name not in names]
    if unknown:
        raise FieldError("skip", f"skip: no task {', '.join(unknown)} in {pipeline};"
                                 f" its tasks: {', '.join(names)}")
    return store.add_schedule(pipeline, cron, timezone, list(skip), first)


def registered(store: Store, pipeline: str) -> PipelineRecord:
    """The registered pipeline of that name: schedules and webhooks are made for those only."""
    try:
        return store.get_pipeline(pipeline)
    except NotFoundError:
        raise FieldError("pipeline", f"pipeline {pipeline!r} is not registered with the"
                                     " server; register it first: POST /api/pipelines or the"
                                     " web UI") from None


def schedule_json(record: ScheduleRecord) -> dict:
    return {"id": record.id, "pipeline": record.pipeline, "cron": record.cron,
            "timezone": record.timezone, "skip": record.skip, "enabled": record.enabled,
            "next_due": record.next_due.isoformat(), "created_at": record.created_at.isoformat()}


def start_scheduled_run(store: Store, settings: Settings, schedule: ScheduleRecord) -> str:
    """The registered pipeline as it is now, in its own engine process; returns the run id."""
    return start_registered_run(store, settings, schedule.pipeline, skip=schedule.skip,
                                started_by=f"schedule {schedule.id}")


class CronScheduler:
    """Starts the runs of due schedules; `tick()` is one pass, the thread calls it."""

    def __init__(self, store: Store, settings: Settings, clock: Callable[[], datetime] = now,
                 start_run: Callable[[ScheduleRecord], str] | None = None,
                 interval: float = 5.0):
        self._store, self._clock, self._interval = store, clock, interval
        self._start_run = start_run or (lambda s: start_scheduled_run(store, settings, s))
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="conveyor-cron", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def tick(self) -> None:
        at = self._clock()
        for schedule in self._store.due_schedules(at):
            try:
                self._handle(schedule, at)
            except Exception:  # one broken schedule must not stop the others
                log.exception("schedule %d (%s): its tick failed", schedule.id, schedule.pipeline)

    def _handle(self, schedule: ScheduleRecord, at: datetime) -> None:
        ticks, older = due_ticks(schedule.cron, schedule.timezone, schedule.next_due, at)
        latest = ticks[-1]
        rows = [{"due_at": due, "outcome": "missed", "run_id": None,
                 "message": "no server was running then; only the latest due tick runs"}
                for due in ticks[:-1]]
        if older:
            rows[0]["message"] += f"; earlier ticks since {schedule.next_due:%Y-%m-%d %H:%M} UTC" \
                                  " were missed too"
        # failed until the run has started: a server dying in between leaves a true record
        rows.append({"due_at": latest, "outcome": "failed", "run_id": None,
                     "message": "the server stopped while starting this run"})
        following = next_after(schedule.cron, schedule.timezone, at)
        if not self._store.take_ticks(schedule, following, rows):
            return  # another server took these ticks
        if len(rows) > 1:
            log.warning("schedule %d (%s): %d ticks missed while no server ran; running the"
                        " latest", schedule.id, schedule.pipeline, len(rows) - 1)
        outcome, run_id, message = "started", None, None
        try:
            run_id = self._start_run(schedule)
        except ConveyorError as err:
            outcome, message = "failed", str(err)
        except Exception as err:
            log.exception("schedule %d (%s): cannot start its run", schedule.id,
                          schedule.pipeline)
            outcome, message = "failed", f"cannot start the run: {err}"
        if outcome == "started":
            log.info("schedule %d (%s): started run %s", schedule.id, schedule.pipeline, run_id)
        else:
            log.warning("schedule %d (%s): tick %s failed: %s", schedule.id, schedule.pipeline,
                        latest.isoformat(), message)
        self._store.record_tick(schedule.id, latest, outcome, run_id, message)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = self._interval
            try:
                self.tick()
                soonest = self._store.next_due_at()
                if soonest is not None:
                    wait = min(max((soonest - self._clock()).total_seconds(), 1.0), wait)
            except Exception:  # the database may be back on the next pass
                log.exception("cron scheduler: a pass failed; trying again in %.0f s", wait)
            self._stopping.wait(wait)

