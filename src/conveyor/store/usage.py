"""The store's part for what each attempt's processes used: CPU time, peak memory, GPU memory.

A mixin of `Store`: the same engine and the same write discipline as runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, select

from conveyor.store.models import attempt_usage, attempts, runs
from conveyor.store.times import as_utc

if TYPE_CHECKING:
    from conveyor.executors.usage import Usage


class UsageState:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""

    def record_usage(self, attempt_id: int, run_id: str, task: str, usage: Usage) -> None:
        with self._write() as conn:
            insert_usage(conn, attempt_id, run_id, task, usage)

    def run_usage(self, run_id: str) -> dict[str, dict]:
        """Per task, its last measured attempt's {cpu_seconds, peak_memory, gpu_memory, attempt}."""
        query = (
            select(attempt_usage.c.task, attempt_usage.c.cpu_seconds, attempt_usage.c.peak_memory,
                   attempt_usage.c.gpu_memory, attempts.c.number)
            .join(attempts, attempts.c.id == attempt_usage.c.attempt_id)
            .where(attempt_usage.c.run_id == run_id)
            .order_by(attempts.c.number)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {  # later attempts overwrite earlier ones
            task: {"cpu_seconds": cpu, "peak_memory": peak, "gpu_memory": gpu, "attempt": number}
            for task, cpu, peak, gpu, number in rows
        }

    def pipeline_task_usage(self, pipeline: str) -> dict[str, dict]:
        """Per task, over every measured attempt of every run of the pipeline:
        {attempts, mean_duration, mean_cpu_seconds, max_peak_memory, max_gpu_memory}."""
        query = (
            select(attempt_usage.c.task, attempt_usage.c.cpu_seconds, attempt_usage.c.peak_memory,
                   attempt_usage.c.gpu_memory, attempts.c.started_at, attempts.c.finished_at)
            .join(runs, runs.c.id == attempt_usage.c.run_id)
            .join(attempts, attempts.c.id == attempt_usage.c.attempt_id)
            .where(runs.c.pipeline == pipeline)
            .order_by(attempt_usage.c.task)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        by_task: dict[str, list] = {}
        for row in rows:
            by_task.setdefault(row.task, []).append(row)
        summary = {}
        for task, measured in by_task.items():
            durations = [(as_utc(r.finished_at) - as_utc(r.started_at)).total_seconds()
                         for r in measured if r.finished_at is not None]
            gpus = [r.gpu_memory for r in measured if r.gpu_memory is not None]
            summary[task] = {
                "attempts": len(measured),
                "mean_duration": sum(durations) / len(durations) if durations else None,
                "mean_cpu_seconds": sum(r.cpu_seconds for r in measured) / len(measured),
                "max_peak_memory": max(r.peak_memory for r in measured),
                "max_gpu_memory": max(gpus) if gpus else None,
            }
        return summary


def insert_usage(conn: Connection, attempt_id: int, run_id: str, task: str, usage: Usage) -> None:
    """The row of one attempt's usage, in the caller's transaction."""
    conn.execute(insert(attempt_usage).values(
        attempt_id=attempt_id, run_id=run_id, task=task, cpu_seconds=usage.cpu_seconds,
        peak_memory=usage.peak_memory, gpu_memory=usage.gpu_memory,
    ))
