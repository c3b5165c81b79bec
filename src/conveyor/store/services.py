"""Services and their replicas in the store, and what live holders of resources have taken.

A mixin of `Store`: the same engine and the same write discipline as runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from conveyor.store.models import attempts, replicas, runs, services
from conveyor.store.times import as_utc, now


@dataclass(frozen=True)
class ReplicaRecord:
    number: int
    status: str
    port: int
    pid: int | None
    started: float | None
    resources: dict | None
    restarts: int
    message: str | None
    updated_at: datetime


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    model_dir: str
    runtime: str
    model_name: str
    host: str
    port: int
    public: bool
    options: dict
    status: str
    message: str | None
    owner: str | None
    created_at: datetime
    updated_at: datetime
    stop_requested: bool
    replicas: list[ReplicaRecord] = field(default_factory=list)


class ServiceState:
    """Methods of `Store` for services; `self._engine` and `self._write` come from it."""

    def claim_service(self, values: dict, replacing: bool) -> bool:
        """Record a new service; `replacing` drops an earlier, stopped one of the same name."""
        at = now()
        with self._write() as conn:
            exists = conn.execute(select(services.c.name).where(
                services.c.name == values["name"])).first()
            if exists and not replacing:
                return False
            if exists:
                conn.execute(delete(replicas).where(replicas.c.service == values["name"]))
                conn.execute(delete(services).where(services.c.name == values["name"]))
            conn.execute(insert(services), dict(values, created_at=at, updated_at=at,
                                                stop_requested=False))
        return True

    def update_service(self, name: str, **values) -> None:
        with self._write() as conn:
            conn.execute(update(services).where(services.c.name == name)
                         .values(updated_at=now(), **values))

    def save_replica(self, service: str, number: int, **values) -> None:
        """Insert or update one replica's row."""
        values["updated_at"] = now()
        with self._write() as conn:
            changed = conn.execute(update(replicas).where(
                replicas.c.service == service, replicas.c.number == number).values(**values))
            if changed.rowcount == 0:
                conn.execute(insert(replicas), dict(values, service=service, number=number))

    def get_service(self, name: str) -> ServiceRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(services).where(services.c.name == name)).mappings().first()
            if row is None:
                return None
            return _service_record(conn, row)

    def list_services(self) -> list[ServiceRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(services).order_by(services.c.created_at.desc())) \
                .mappings().all()
            return [_service_record(conn, row) for row in rows]

    def request_service_stop(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(update(services).where(services.c.name == name)
                         .values(stop_requested=True))

    def service_stop_requested(self, name: str) -> bool:
        with self._engine.connect() as conn:
            return bool(conn.execute(select(services.c.stop_requested)
                                     .where(services.c.name == name)).scalar())

    def resources_in_use(self, *, except_run: str | None = None,
                         except_service: str | None = None) -> list[tuple[str, dict]]:
        """(owner, resources) of every open task attempt and live replica, for the caller to
        keep those whose owner process still runs."""
        with self._engine.connect() as conn:
            query = (select(runs.c.owner, attempts.c.resources)
                     .join(runs, runs.c.id == attempts.c.run_id)
                     .where(attempts.c.finished_at.is_(None)))
            if except_run is not None:
                query = query.where(attempts.c.run_id != except_run)
            held = [(owner, res) for owner, res in conn.execute(query) if owner and res]
            query = (select(services.c.owner, replicas.c.resources)
                     .join(services, services.c.name == replicas.c.service)
                     .where(replicas.c.status != "TERMINATED"))
            if except_service is not None:
                query = query.where(services.c.name != except_service)
            held += [(owner, res) for owner, res in conn.execute(query) if owner and res]
        return held


def _service_record(conn, row) -> ServiceRecord:
    replica_rows = conn.execute(select(replicas).where(replicas.c.service == row["name"])
                                .order_by(replicas.c.number)).mappings().all()
    return ServiceRecord(
        name=row["name"], model_dir=row["model_dir"], runtime=row["runtime"],
        model_name=row["model_name"], host=row["host"], port=row["port"], public=row["public"],
        options=row["options"] or {}, status=row["status"], message=row["message"],
        owner=row["owner"], created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]), stop_requested=bool(row["stop_requested"]),
        replicas=[ReplicaRecord(
            number=r["number"], status=r["status"], port=r["port"], pid=r["pid"],
            started=r["started"], resources=r["resources"], restarts=r["restarts"], message=r["message"],
            updated_at=as_utc(r["updated_at"])) for r in replica_rows],
    )
