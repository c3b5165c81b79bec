"""The store's part for pipelines registered with the server: their YAML and the folder their
runs start in (the file's relative paths are resolved there).

A mixin of `Store`: the same engine and the same write discipline as runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from conveyor.errors import NotFoundError
from conveyor.store.models import pipelines, runs
from conveyor.store.times import as_utc, now


@dataclass(frozen=True)
class PipelineRecord:
    name: str
    spec_text: str
    directory: str
    source: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def run_file(self) -> Path:
        """The path its runs name: the file it came from, else one in its folder; either way
        the folder is where the runs start."""
        return Path(self.source) if self.source else Path(self.directory) / "pipeline.yaml"


class PipelineRegistry:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""

    def save_pipeline(self, name: str, spec_text: str, directory: str, source: str | None,
                      replace: bool) -> bool:
        """Register a pipeline; False if the name is taken and `replace` is not set."""
        at = now()
        with self._write() as conn:
            exists = conn.execute(select(pipelines.c.name).where(pipelines.c.name == name)).first()
            if exists and not replace:
                return False
            if exists:
                conn.execute(update(pipelines).where(pipelines.c.name == name).values(
                    spec_text=spec_text, directory=directory, source=source, updated_at=at))
            else:
                conn.execute(insert(pipelines).values(
                    name=name, spec_text=spec_text, directory=directory, source=source,
                    created_at=at, updated_at=at))
        return True

    def update_pipeline_text(self, name: str, spec_text: str) -> None:
        with self._write() as conn:
            changed = conn.execute(update(pipelines).where(pipelines.c.name == name)
                                   .values(spec_text=spec_text, updated_at=now()))
        if changed.rowcount != 1:
            raise _unknown(name)

    def get_pipeline(self, name: str) -> PipelineRecord:
        with self._engine.connect() as conn:
            row = conn.execute(select(pipelines).where(pipelines.c.name == name)).mappings().first()
        if row is None:
            raise _unknown(name)
        return _pipeline_record(row)

    def list_pipelines(self) -> list[PipelineRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(pipelines).order_by(pipelines.c.name)).mappings().all()
        return [_pipeline_record(row) for row in rows]

    def delete_pipeline(self, name: str) -> None:
        with self._write() as conn:
            gone = conn.execute(delete(pipelines).where(pipelines.c.name == name))
        if gone.rowcount != 1:
            raise _unknown(name)

    def last_run_of(self, pipeline: str) -> dict | None:
        """The newest run of a pipeline name: {id, status, created_at}."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(runs.c.id, runs.c.status, runs.c.created_at)
                .where(runs.c.pipeline == pipeline)
                .order_by(runs.c.created_at.desc()).limit(1)
            ).mappings().first()
        return dict(row, created_at=as_utc(row["created_at"])) if row else None


def _unknown(name: str) -> NotFoundError:
    return NotFoundError(f"no pipeline {name!r} is registered; GET /api/pipelines lists them")


def _pipeline_record(row) -> PipelineRecord:
    return PipelineRecord(
        name=row["name"], spec_text=row["spec_text"], directory=row["directory"],
        source=row["source"], created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
    )
