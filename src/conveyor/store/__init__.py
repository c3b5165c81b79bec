"""Persistence: every state change and log line, in SQLite or PostgreSQL."""

from conveyor.store.repository import LogLine, RunRecord, Store, TaskRecord

__all__ = ["LogLine", "RunRecord", "Store", "TaskRecord"]
