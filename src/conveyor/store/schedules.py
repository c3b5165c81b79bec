"""The store's part for cron schedules of pipelines and the ticks they handled.

A mixin of `Store`: the same engine and the same write discipline as runs. A tick is taken
by moving `next_due` forward with a compare-and-set, and recorded under the key
(schedule, due time): two servers on one database never both handle a tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.errors import NotFoundError
from conveyor.store.models import schedule_ticks, schedules
from conveyor.store.times import as_utc, now


@dataclass(frozen=True)
class ScheduleRecord:
    id: int
    pipeline: str
    cron: str
    timezone: str
    skip: list[str]
    enabled: bool
    next_due: datetime  # the first tick not handled yet, in UTC
    created_at: datetime


@dataclass(frozen=True)
class TickRecord:
    due_at: datetime
    outcome: str  # started | missed | failed
    run_id: str | None
    message: str | None
    handled_at: datetime


class ScheduleState:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""

    def add_schedule(self, pipeline: str, cron: str, timezone: str, skip: list[str],
                     next_due: datetime) -> ScheduleRecord:
        with self._write() as conn:
            result = conn.execute(insert(schedules).values(
                pipeline=pipeline, cron=cron, timezone=timezone, options={"skip": list(skip)},
                enabled=True, next_due=next_due, created_at=now()))
            schedule_id = result.inserted_primary_key[0]
        return self.get_schedule(schedule_id)

    def get_schedule(self, schedule_id: int) -> ScheduleRecord:
        with self._engine.connect() as conn:
            row = conn.execute(select(schedules).where(schedules.c.id == schedule_id)) \
                .mappings().first()
        if row is None:
            raise _unknown(schedule_id)
        return _schedule_record(row)

    def list_schedules(self, pipeline: str | None = None) -> list[ScheduleRecord]:
        query = select(schedules).order_by(schedules.c.id)
        if pipeline is not None:
            query = query.where(schedules.c.pipeline == pipeline)
        with self._engine.connect() as conn:
            return [_schedule_record(row) for row in conn.execute(query).mappings()]

    def delete_schedule(self, schedule_id: int) -> None:
        """Remove a schedule and (by cascade) its ticks; runs it started stay."""
        with self._write() as conn:
            gone = conn.execute(delete(schedules).where(schedules.c.id == schedule_id))
        if gone.rowcount != 1:
            raise _unknown(schedule_id)

    def due_schedules(self, at: datetime) -> list[ScheduleRecord]:
        """Enabled schedules with a tick due at or before `at`."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(schedules).where(
                schedules.c.enabled.is_(True), schedules.c.next_due <= at)).mappings()
            return [_schedule_record(row) for row in rows]

    def next_due_at(self) -> datetime | None:
        """The soonest tick of any enabled schedule."""
        with self._engine.connect() as conn:
            soonest = conn.execute(select(func.min(schedules.c.next_due))
                                   .where(schedules.c.enabled.is_(True))).scalar()
        return as_utc(soonest)

    def take_ticks(self, schedule: ScheduleRecord, next_due: datetime,
                   ticks: list[dict]) -> bool:
        """Move the schedule's `next_due` on from what `schedule` saw and record `ticks`
        (dicts of due_at, outcome, run_id, message) in one transaction; False, with nothing
        written, if another process took them first."""
        at = now()
        try:
            with self._write() as conn:
                moved = conn.execute(update(schedules).where(
                    schedules.c.id == schedule.id, schedules.c.next_due == schedule.next_due,
                ).values(next_due=next_due))
                if moved.rowcount != 1:
                    return False
                conn.execute(insert(schedule_ticks), [
                    dict(tick, schedule_id=schedule.id, handled_at=at) for tick in ticks])
        except IntegrityError:
            return False
        return True

    def record_tick(self, schedule_id: int, due_at: datetime, outcome: str,
                    run_id: str | None, message: str | None) -> None:
        with self._write() as conn:
            conn.execute(update(schedule_ticks).where(
                schedule_ticks.c.schedule_id == schedule_id, schedule_ticks.c.due_at == due_at,
            ).values(outcome=outcome, run_id=run_id, message=message, handled_at=now()))

    def list_ticks(self, schedule_id: int, limit: int = 100) -> list[TickRecord]:
        """Newest first."""
        self.get_schedule(schedule_id)
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(schedule_ticks).where(schedule_ticks.c.schedule_id == schedule_id)
                .order_by(schedule_ticks.c.due_at.desc()).limit(limit)).mappings()
            return [TickRecord(due_at=as_utc(r["due_at"]), outcome=r["outcome"],
                               run_id=r["run_id"], message=r["message"],
                               handled_at=as_utc(r["handled_at"])) for r in rows]


def _unknown(schedule_id: int) -> NotFoundError:
    return NotFoundError(f"there is no schedule {schedule_id}; `conveyor schedule list` lists them")


def _schedule_record(row) -> ScheduleRecord:
    return ScheduleRecord(
        id=row["id"], pipeline=row["pipeline"], cron=row["cron"], timezone=row["timezone"],
        skip=list((row["options"] or {}).get("skip", [])), enabled=bool(row["enabled"]),
        next_due=as_utc(row["next_due"]), created_at=as_utc(row["created_at"]),
    )
