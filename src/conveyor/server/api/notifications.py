"""/api/notifications: webhooks told when a pipeline's runs finish, and their deliveries.

URLs are shown redacted (scheme and host): a webhook's path is often its secret.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from conveyor.server.deps import StoreDep
from conveyor.server.errors import ApiError
from conveyor.server.notify import new_notification, notification_json
from conveyor.server.scheduler import FieldError

router = APIRouter(tags=["notifications"])


class NotificationRequest(BaseModel):
    pipeline: str
    url: str
    on_success: bool = True
    on_failure: bool = True
    slack: bool = False


@router.get("/notifications")
def list_notifications(store: StoreDep, pipeline: str | None = None) -> list[dict]:
    return [notification_json(n) for n in store.list_notifications(pipeline)]


@router.post("/notifications", status_code=201)
def add_notification(body: NotificationRequest, store: StoreDep) -> dict:
    try:
        record = new_notification(store, body.pipeline, body.url, body.on_success,
                                  body.on_failure, body.slack)
    except FieldError as err:
        raise ApiError(400, str(err), err.field) from None
    return notification_json(record)


@router.delete("/notifications/{notification_id}", status_code=204)
def remove_notification(notification_id: int, store: StoreDep) -> Response:
    store.delete_notification(notification_id)
    return Response(status_code=204)


@router.get("/notifications/{notification_id}/deliveries")
def list_deliveries(notification_id: int, store: StoreDep, limit: int = 100) -> list[dict]:
    return [{"run_id": d.run_id, "event": d.event, "status": d.status, "attempts": d.attempts,
             "response_code": d.response_code, "message": d.message,
             "updated_at": d.updated_at.isoformat()}
            for d in store.list_deliveries(notification_id, max(1, min(limit, 1000)))]
