"""The tables. Only `store.repository` reads or writes them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pipeline", String(200), nullable=False),
    Column("pipeline_file", Text, nullable=False),
    Column("spec_text", Text, nullable=False),  # the file as it was when the run started
    Column("options", JSON, nullable=False),  # skip, only, env overrides, capacity
    Column("status", String(20), nullable=False),
    Column("message", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("owner", String(200)),  # host:pid:start of the engine process executing it
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("exit_code", Integer),
    Column("message", Text),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("resources", JSON),  # what the last attempt was given, GPU ids included
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("host", String(200), nullable=False),
    Column("processes", JSON),  # [{"rank", "pid", "started"}] to find leftovers after a crash
    Column("resources", JSON),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("exit_code", Integer),
    Column("outcome", String(20)),
    Index("ix_attempts_run_task", "run_id", "task"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(200)),  # None for the run itself
    Column("status", String(20), nullable=False),
    Column("message", Text),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_events_run", "run_id"),
)

log_lines = Table(
    "log_lines",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("rank", Integer, nullable=False, default=0),
    Column("stream", String(6), nullable=False),  # stdout | stderr
    Column("at", Float, nullable=False),  # unix time, cheap to write in bulk
    Column("text", Text, nullable=False),
    Index("ix_log_lines_run_task", "run_id", "task", "id"),
)

services = Table(
    "services",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("model_dir", Text, nullable=False),
    Column("runtime", String(20), nullable=False),
    Column("model_name", String(200), nullable=False),  # the name clients ask for
    Column("host", String(200), nullable=False),  # where the gateway listens
    Column("port", Integer, nullable=False),
    Column("public", Boolean, nullable=False),
    Column("options", JSON, nullable=False),  # replicas, scaling, resources, env names
    Column("status", String(20), nullable=False),
    Column("message", Text),
    Column("owner", String(200)),  # host:pid:start of the process hosting the service
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("stop_requested", Boolean, nullable=False, default=False),
)

replicas = Table(
    "replicas",
    metadata,
    Column("service", String(200), ForeignKey("services.name", ondelete="CASCADE"),
           primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("status", String(20), nullable=False),
    Column("port", Integer, nullable=False),
    Column("pid", Integer),
    Column("started", Float),  # the process's start time: a reused pid is never mistaken for it
    Column("resources", JSON),  # what it was given, GPU ids included
    Column("restarts", Integer, nullable=False, default=0),
    Column("message", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

attempt_usage = Table(
    "attempt_usage",
    metadata,
    Column("attempt_id", Integer, ForeignKey("attempts.id", ondelete="CASCADE"), primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(200), nullable=False),
    Column("cpu_seconds", Float, nullable=False),  # user + system time of the process tree
    Column("peak_memory", BigInteger, nullable=False),  # bytes, resident, whole tree at once
    Column("gpu_memory", BigInteger),  # bytes at peak, where nvidia-smi exists
    Index("ix_attempt_usage_run", "run_id"),
)

pipelines = Table(
    "pipelines",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("spec_text", Text, nullable=False),
    Column("directory", Text, nullable=False),  # runs start here: the file's relative paths
    Column("source", Text),  # the file it was registered from, if any
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("options", JSON, nullable=False),  # skip, env overrides of the runs it starts
    Column("enabled", Boolean, nullable=False, default=True),
    Column("next_due", DateTime(timezone=True), nullable=False),  # the first tick not handled
    Column("created_at", DateTime(timezone=True), nullable=False),
)

schedule_ticks = Table(
    "schedule_ticks",
    metadata,
    Column("schedule_id", Integer, ForeignKey("schedules.id", ondelete="CASCADE"),
           primary_key=True),
    Column("due_at", DateTime(timezone=True), primary_key=True),  # the key: one run per tick
    Column("outcome", String(20), nullable=False),  # started | missed | failed
    Column("run_id", String(32)),
    Column("message", Text),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False),
    Column("url", Text, nullable=False),  # may hold a secret: never logged whole
    Column("on_success", Boolean, nullable=False),
    Column("on_failure", Boolean, nullable=False),
    Column("slack", Boolean, nullable=False),  # Slack-compatible body instead of plain JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("notification_id", Integer, ForeignKey("notifications.id", ondelete="CASCADE"),
           primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("event", String(20), nullable=False),  # run.succeeded | run.failed
    Column("run_finished_at", DateTime(timezone=True), nullable=False),  # a resumed run: told anew
    Column("status", String(20), nullable=False),  # sending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("response_code", Integer),
    Column("message", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
