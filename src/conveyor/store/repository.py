"""The one API for state and logs: runs, tasks, attempts, events and log lines; the mixins
add services and replicas, usage, registered pipelines, schedules and notifications.

SQLite (WAL) by default, PostgreSQL by URL. Status changes are compare-and-set
(`UPDATE ... WHERE status = old`), so two processes can never both move a task
to running; each change is committed with its event row in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError

from conveyor.errors import ConfigError, NotFoundError
from conveyor.store.models import attempts, events, log_lines, metadata, runs, tasks
from conveyor.store.notifications import NotificationState
from conveyor.store.pipelines import PipelineRegistry
from conveyor.store.schedules import ScheduleState
from conveyor.store.services import ServiceState
from conveyor.store.usage import UsageState, insert_usage
from conveyor.store.times import as_utc, now

if TYPE_CHECKING:
    from conveyor.executors.usage import Usage


# Statements on the engine's hot path, built once: keys of the parameters that name columns
# become the SET clause; the b_ parameters fill the WHERE clause.
_MOVE_TASK = update(tasks).where(
    tasks.c.run_id == bindparam("b_run"),
    tasks.c.name == bindparam("b_name"),
    tasks.c.status == bindparam("b_old"),
)
_UPDATE_ATTEMPT = update(attempts).where(attempts.c.id == bindparam("b_id"))
_ADD_EVENT = insert(events)
_ADD_ATTEMPT = insert(attempts)


@dataclass(frozen=True)
class TaskRecord:
    name: str
    position: int
    status: str
    attempts: int
    exit_code: int | None
    message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    resources: dict | None


@dataclass(frozen=True)
class RunRecord:
    id: str
    pipeline: str
    pipeline_file: str
    spec_text: str
    options: dict
    status: str
    message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    tasks: list[TaskRecord] = field(default_factory=list)

    def task(self, name: str) -> TaskRecord:
        for record in self.tasks:
            if record.name == name:
                return record
        known = ", ".join(t.name for t in self.tasks)
        raise NotFoundError(f"run {self.id} has no task {name!r}; its tasks: {known}")


@dataclass(frozen=True)
class AttemptRecord:
    id: int
    task: str
    number: int
    host: str
    processes: list[dict]
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    outcome: str | None


@dataclass(frozen=True)
class LogLine:
    id: int
    task: str
    attempt: int
    rank: int
    stream: str
    at: float
    text: str


class Store(ServiceState, UsageState, PipelineRegistry, ScheduleState, NotificationState):
    def __init__(self, url: str):
        self.url = url
        self._engine = _create_engine(url)
        self._writer = self._engine.execution_options(conveyor_write=True)
        metadata.create_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer.begin() as conn:
            yield conn

    # runs

    def create_run(
        self,
        *,
        pipeline: str,
        pipeline_file: str,
        spec_text: str,
        options: dict,
        task_statuses: list[tuple[str, str, str | None]],
    ) -> str:
        """A new run with its tasks in their first status; returns the run id."""
        run_id = uuid.uuid4().hex[:12]
        at = now()
        with self._write() as conn:
            conn.execute(
                insert(runs).values(
                    id=run_id,
                    pipeline=pipeline,
                    pipeline_file=pipeline_file,
                    spec_text=spec_text,
                    options=options,
                    status="pending",
                    created_at=at,
                    cancel_requested=False,
                )
            )
            conn.execute(
                insert(tasks),
                [
                    {"run_id": run_id, "name": name, "position": i, "status": status,
                     "attempts": 0, "message": message}
                    for i, (name, status, message) in enumerate(task_statuses)
                ],
            )
            conn.execute(
                insert(events),
                [{"run_id": run_id, "task": None, "status": "pending", "message": None, "at": at}]
                + [
                    {"run_id": run_id, "task": name, "status": status, "message": message, "at": at}
                    for name, status, message in task_statuses
                ],
            )
        return run_id

    def get_run(self, run_id: str) -> RunRecord:
        with self._engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
            if row is None:
                row = self._by_prefix(conn, run_id)
            task_rows = conn.execute(
                select(tasks).where(tasks.c.run_id == row["id"]).order_by(tasks.c.position)
            ).mappings().all()
        return _run_record(row, [_task_record(t) for t in task_rows])

    def _by_prefix(self, conn: Connection, prefix: str):
        """A unique id prefix is enough, as with git."""
        rows = conn.execute(
            select(runs).where(runs.c.id.startswith(prefix, autoescape=True)).limit(2)
        ).mappings().all()
        if len(rows) != 1 or not prefix:
            what = "is ambiguous" if rows else "is not a run"
            raise NotFoundError(f"{prefix!r} {what}; `conveyor runs` lists the runs")
        return rows[0]

    def list_runs(self, limit: int = 50, pipeline: str | None = None,
                  status: str | None = None) -> list[RunRecord]:
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
        if pipeline is not None:
            query = query.where(runs.c.pipeline == pipeline)
        if status is not None:
            query = query.where(runs.c.status == status)
        with self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_run_record(row, []) for row in rows]

    def claim_run(self, run_id: str, owner: str, replacing: str | None) -> bool:
        """Become the engine of a run if it has none, or if `replacing` (a dead owner) still holds it."""
        condition = runs.c.owner.is_(None) if replacing is None else runs.c.owner == replacing
        with self._write() as conn:
            result = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, condition)
                .values(owner=owner, heartbeat_at=now(), cancel_requested=False)
            )
        return result.rowcount == 1

    def heartbeat(self, run_id: str, owner: str) -> bool:
        with self._write() as conn:
            result = conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.owner == owner)
                .values(heartbeat_at=now())
            )
        return result.rowcount == 1

    def release_run(self, run_id: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.owner == owner).values(owner=None)
            )

    def set_run_status(self, run_id: str, status: str, message: str | None = None) -> None:
        at = now()
        values: dict = {"status": status, "message": message}
        if status == "running":
            values.update(started_at=at, finished_at=None)
        elif status in ("succeeded", "failed", "cancelled"):
            values["finished_at"] = at
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            conn.execute(
                insert(events).values(run_id=run_id, task=None, status=status,
                                      message=message, at=at)
            )

    def request_cancel(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(cancel_requested=True))

    def cancel_requested(self, run_id: str) -> bool:
        with self._engine.connect() as conn:
            return bool(
                conn.execute(select(runs.c.cancel_requested).where(runs.c.id == run_id)).scalar()
            )

    # tasks and attempts

    def move_task(self, run_id: str, name: str, old: str, new: str, **values) -> bool:
        """Compare-and-set a task's status (with its event); False if it was not `old`."""
        message = values.get("message")
        with self._write() as conn:
            return self._move(conn, run_id, name, old, new, message, values)

    def _move(self, conn, run_id, name, old, new, message, values) -> bool:
        result = conn.execute(
            _MOVE_TASK, {"b_run": run_id, "b_name": name, "b_old": old, "status": new, **values}
        )
        if result.rowcount != 1:
            return False
        conn.execute(
            _ADD_EVENT,
            {"run_id": run_id, "task": name, "status": new, "message": message, "at": now()},
        )
        return True

    def begin_attempt(
        self, run_id: str, name: str, old: str, number: int, host: str, resources: dict
    ) -> int | None:
        """Move a task to running and open its attempt; None if another process got there first."""
        at = now()
        with self._write() as conn:
            moved = self._move(
                conn, run_id, name, old, "running", None,
                {"attempts": number, "started_at": at, "finished_at": None,
                 "exit_code": None, "message": None, "resources": resources},
            )
            if not moved:
                return None
            result = conn.execute(
                _ADD_ATTEMPT,
                {"run_id": run_id, "task": name, "number": number, "host": host,
                 "processes": [], "resources": resources, "started_at": at},
            )
            return result.inserted_primary_key[0]

    def record_processes(self, attempt_id: int, processes: list[dict]) -> None:
        with self._write() as conn:
            conn.execute(_UPDATE_ATTEMPT, {"b_id": attempt_id, "processes": processes})

    def finish_attempt(
        self,
        attempt_id: int,
        run_id: str,
        name: str,
        new_status: str,
        exit_code: int | None,
        outcome: str,
        message: str | None,
        usage: Usage | None = None,
    ) -> None:
        """Close an attempt (with what it used, if measured) and move its task out of running,
        in one transaction."""
        at = now()
        task_values: dict = {"exit_code": exit_code, "message": message}
        if new_status != "pending":
            task_values["finished_at"] = at
        with self._write() as conn:
            conn.execute(
                _UPDATE_ATTEMPT,
                {"b_id": attempt_id, "finished_at": at, "exit_code": exit_code, "outcome": outcome},
            )
            if usage is not None:
                insert_usage(conn, attempt_id, run_id, name, usage)
            self._move(conn, run_id, name, "running", new_status, message, task_values)

    def open_attempts(self, run_id: str) -> list[AttemptRecord]:
        """Attempts never closed: their engine died while they ran."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.run_id == run_id,
                                       attempts.c.finished_at.is_(None))
            ).mappings().all()
        return [_attempt_record(row) for row in rows]

    def close_attempt(self, attempt_id: int, outcome: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(attempts).where(attempts.c.id == attempt_id)
                .values(finished_at=now(), outcome=outcome)
            )

    def list_attempts(self, run_id: str, task: str) -> list[AttemptRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.run_id == run_id, attempts.c.task == task)
                .order_by(attempts.c.number)
            ).mappings().all()
        return [_attempt_record(row) for row in rows]

    def list_events(self, run_id: str) -> list[dict]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(events).where(events.c.run_id == run_id).order_by(events.c.id)
            ).mappings().all()
        return [dict(row, at=as_utc(row["at"])) for row in rows]

    # logs

    def append_logs(self, rows: Iterable[dict]) -> None:
        """Rows of run_id, task, attempt, rank, stream, at, text."""
        rows = list(rows)
        if rows:
            with self._write() as conn:
                conn.execute(insert(log_lines), rows)

    def read_logs(
        self, run_id: str, task: str, after_id: int = 0, attempt: int | None = None,
        limit: int = 5000,
    ) -> list[LogLine]:
        query = select(log_lines).where(
            log_lines.c.run_id == run_id, log_lines.c.task == task, log_lines.c.id > after_id
        )
        if attempt is not None:
            query = query.where(log_lines.c.attempt == attempt)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(log_lines.c.id).limit(limit)).mappings().all()
        return [
            LogLine(id=r["id"], task=r["task"], attempt=r["attempt"], rank=r["rank"],
                    stream=r["stream"], at=r["at"], text=r["text"])
            for r in rows
        ]

    def count_logs(self, run_id: str, task: str) -> int:
        with self._engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(log_lines)
                .where(log_lines.c.run_id == run_id, log_lines.c.task == task)
            ).scalar_one()


def _create_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 60})
            _tune_sqlite(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        with engine.connect():
            pass
    except (ArgumentError, OperationalError, ModuleNotFoundError) as err:
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"cannot open the store {url!r}: {reason}; check CONVEYOR_DB_URL"
        ) from None
    return engine


def _tune_sqlite(engine: Engine) -> None:
    """WAL so readers never wait; BEGIN IMMEDIATE for writes so two writers queue, not deadlock."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("conveyor_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _run_record(row, task_records: list[TaskRecord]) -> RunRecord:
    return RunRecord(
        id=row["id"], pipeline=row["pipeline"], pipeline_file=row["pipeline_file"],
        spec_text=row["spec_text"], options=row["options"] or {}, status=row["status"],
        message=row["message"], created_at=as_utc(row["created_at"]),
        started_at=as_utc(row["started_at"]), finished_at=as_utc(row["finished_at"]),
        owner=row["owner"], heartbeat_at=as_utc(row["heartbeat_at"]),
        cancel_requested=bool(row["cancel_requested"]), tasks=task_records,
    )


def _task_record(row) -> TaskRecord:
    return TaskRecord(
        name=row["name"], position=row["position"], status=row["status"],
        attempts=row["attempts"], exit_code=row["exit_code"], message=row["message"],
        started_at=as_utc(row["started_at"]), finished_at=as_utc(row["finished_at"]),
        resources=row["resources"],
    )


def _attempt_record(row) -> AttemptRecord:
    return AttemptRecord(
        id=row["id"], task=row["task"], number=row["number"], host=row["host"],
        processes=row["processes"] or [], started_at=as_utc(row["started_at"]),
        finished_at=as_utc(row["finished_at"]), exit_code=row["exit_code"],
        outcome=row["outcome"],
    )
