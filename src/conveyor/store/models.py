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
