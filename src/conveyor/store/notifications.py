"""The store's part for webhooks per pipeline and their deliveries.

A mixin of `Store`: the same engine and the same write discipline as runs. A delivery is
claimed by inserting its row (key: notification and run), so two servers on one database
never both send it; a resumed run that finishes again, or a claim whose sender died, is
claimed anew by a compare-and-set on the row as it was seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.errors import NotFoundError
from conveyor.store.models import deliveries, notifications, runs
from conveyor.store.times import as_utc, now


@dataclass(frozen=True)
class NotificationRecord:
    id: int
    pipeline: str
    url: str  # may hold a secret: show it through notify.redact
    on_success: bool
    on_failure: bool
    slack: bool
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRecord:
    run_id: str
    event: str
    status: str  # sending | delivered | failed
    attempts: int
    response_code: int | None
    message: str | None
    updated_at: datetime


@dataclass(frozen=True)
class PendingDelivery:
    """A finished run a notification should tell about, and its delivery row as seen."""

    notification: NotificationRecord
    run_id: str
    event: str
    run_finished_at: datetime  # as the database gave it, to be compared and copied
    seen: tuple[datetime, datetime] | None  # the row's (run_finished_at, updated_at), if any


class NotificationState:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""

    def add_notification(self, pipeline: str, url: str, on_success: bool, on_failure: bool,
                         slack: bool) -> NotificationRecord:
        with self._write() as conn:
            result = conn.execute(insert(notifications).values(
                pipeline=pipeline, url=url, on_success=on_success, on_failure=on_failure,
                slack=slack, created_at=now()))
            notification_id = result.inserted_primary_key[0]
        return self.get_notification(notification_id)

    def get_notification(self, notification_id: int) -> NotificationRecord:
        with self._engine.connect() as conn:
            row = conn.execute(select(notifications).where(
                notifications.c.id == notification_id)).mappings().first()
        if row is None:
            raise _unknown(notification_id)
        return _notification_record(row)

    def list_notifications(self, pipeline: str | None = None) -> list[NotificationRecord]:
        query = select(notifications).order_by(notifications.c.id)
        if pipeline is not None:
            query = query.where(notifications.c.pipeline == pipeline)
        with self._engine.connect() as conn:
            return [_notification_record(row) for row in conn.execute(query).mappings()]

    def delete_notification(self, notification_id: int) -> None:
        """Remove a notification and (by cascade) its deliveries."""
        with self._write() as conn:
            gone = conn.execute(delete(notifications).where(
                notifications.c.id == notification_id))
        if gone.rowcount != 1:
            raise _unknown(notification_id)

    def pending_deliveries(self, stale_before: datetime, limit: int = 20) -> list[PendingDelivery]:
        """Runs that succeeded or failed after a notification of their pipeline was made, with
        no delivery for that finish yet, or one left `sending` since before `stale_before`."""
        n, r, d = notifications, runs, deliveries
        wanted = or_(and_(r.c.status == "succeeded", n.c.on_success.is_(True)),
                     and_(r.c.status == "failed", n.c.on_failure.is_(True)))
        untold = or_(d.c.run_id.is_(None), d.c.run_finished_at < r.c.finished_at,
                     and_(d.c.status == "sending", d.c.updated_at < stale_before))
        query = (
            select(n, r.c.id.label("run_id"), r.c.status.label("run_status"),
                   r.c.finished_at.label("run_finished_at"),
                   d.c.run_finished_at.label("seen_finished_at"),
                   d.c.updated_at.label("seen_updated_at"))
            .join(r, r.c.pipeline == n.c.pipeline)
            .outerjoin(d, and_(d.c.notification_id == n.c.id, d.c.run_id == r.c.id))
            .where(wanted, r.c.finished_at >= n.c.created_at, untold)
            .order_by(r.c.finished_at).limit(limit)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [PendingDelivery(
            notification=_notification_record(row), run_id=row["run_id"],
            event=f"run.{row['run_status']}", run_finished_at=row["run_finished_at"],
            seen=None if row["seen_updated_at"] is None
            else (row["seen_finished_at"], row["seen_updated_at"]),
        ) for row in rows]

    def claim_delivery(self, pending: PendingDelivery) -> bool:
        """Become the sender of a delivery; False if another process already is."""
        key = (deliveries.c.notification_id == pending.notification.id,
               deliveries.c.run_id == pending.run_id)
        values = {"event": pending.event, "run_finished_at": pending.run_finished_at,
                  "status": "sending", "attempts": 0, "response_code": None, "message": None,
                  "updated_at": now()}
        try:
            with self._write() as conn:
                if pending.seen is None:
                    conn.execute(insert(deliveries).values(
                        notification_id=pending.notification.id, run_id=pending.run_id, **values))
                    return True
                finished, updated = pending.seen
                claimed = conn.execute(update(deliveries).where(
                    *key, deliveries.c.run_finished_at == finished,
                    deliveries.c.updated_at == updated).values(**values))
                return claimed.rowcount == 1
        except IntegrityError:
            return False

    def update_delivery(self, notification_id: int, run_id: str, **values) -> None:
        """Record an attempt or the outcome: status, attempts, response_code, message."""
        with self._write() as conn:
            conn.execute(update(deliveries).where(
                deliveries.c.notification_id == notification_id, deliveries.c.run_id == run_id,
            ).values(updated_at=now(), **values))

    def list_deliveries(self, notification_id: int, limit: int = 100) -> list[DeliveryRecord]:
        """Newest first."""
        self.get_notification(notification_id)
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(deliveries).where(deliveries.c.notification_id == notification_id)
                .order_by(deliveries.c.updated_at.desc()).limit(limit)).mappings()
            return [DeliveryRecord(
                run_id=r["run_id"], event=r["event"], status=r["status"], attempts=r["attempts"],
                response_code=r["response_code"], message=r["message"],
                updated_at=as_utc(r["updated_at"])) for r in rows]


def _unknown(notification_id: int) -> NotFoundError:
    return NotFoundError(f"there is no notification {notification_id};"
                         " `conveyor notify list` lists them")


def _notification_record(row) -> NotificationRecord:
    return NotificationRecord(
        id=row["id"], pipeline=row["pipeline"], url=row["url"],
        on_success=bool(row["on_success"]), on_failure=bool(row["on_failure"]),
        slack=bool(row["slack"]), created_at=as_utc(row["created_at"]),
    )
