"""/api/schedules: cron schedules of registered pipelines and the ticks they handled."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from conveyor.server.deps import SettingsDep, StoreDep
from conveyor.server.errors import ApiError
from conveyor.server.scheduler import FieldError, new_schedule, schedule_json

router = APIRouter(tags=["schedules"])


class ScheduleRequest(BaseModel):
    pipeline: str
    cron: str = Field(description="Five fields: minute hour day-of-month month day-of-week.")
    skip: list[str] = Field(default_factory=list)
    timezone: str = Field(default="UTC", description="An IANA zone the cron reads in.")


@router.get("/schedules")
def list_schedules(store: StoreDep, pipeline: str | None = None) -> list[dict]:
    return [schedule_json(s) for s in store.list_schedules(pipeline)]


@router.post("/schedules", status_code=201)
def add_schedule(body: ScheduleRequest, store: StoreDep, settings: SettingsDep) -> dict:
    try:
        record = new_schedule(store, settings, body.pipeline, body.cron, body.timezone,
                              body.skip)
    except FieldError as err:
        raise ApiError(400, str(err), err.field) from None
    return schedule_json(record)


@router.delete("/schedules/{schedule_id}", status_code=204)
def remove_schedule(schedule_id: int, store: StoreDep) -> Response:
    store.delete_schedule(schedule_id)
    return Response(status_code=204)


@router.get("/schedules/{schedule_id}/ticks")
def list_ticks(schedule_id: int, store: StoreDep, limit: int = 100) -> list[dict]:
    return [{"due_at": t.due_at.isoformat(), "outcome": t.outcome, "run_id": t.run_id,
             "message": t.message, "handled_at": t.handled_at.isoformat()}
            for t in store.list_ticks(schedule_id, max(1, min(limit, 1000)))]
