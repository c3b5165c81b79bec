"""Settings: `$CONVEYOR_HOME/config.yaml`, overridden by `CONVEYOR_*` environment variables.

`CONVEYOR_HOME` (default `~/.conveyor`) holds all of Conveyor's state, so
pointing it elsewhere isolates everything: the SQLite store, runs' output and
work folders, and the storage folders that tasks mount.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from conveyor.errors import ConfigError
from conveyor.pipelines.resources import Capacity


class _ConfigFile(BaseModel):
    """What config.yaml may hold; every key is optional."""

    model_config = ConfigDict(extra="forbid")

    db_url: str | None = None
    storage_root: str | None = None
    capacity: str | dict[str, str | int | float] | None = None
    kill_grace: float | None = None
    executor: Literal["local", "ray"] | None = None
    ray_address: str | None = None


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    storage_root: Path  # named storage folders live here
    capacity: Capacity
    kill_grace: float  # seconds between SIGTERM and SIGKILL when a task is stopped
    executor: str = "local"  # where runs execute unless told otherwise: local or ray
    ray_address: str | None = None  # the Ray cluster's head (host:port); None: "auto"

    @property
    def runs_root(self) -> Path:
        return self.home / "runs"

    def with_db(self, db_url: str) -> Settings:
        return dataclasses.replace(self, db_url=db_url)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env.get("CONVEYOR_HOME") or Path.home() / ".conveyor").expanduser().absolute()
    file = _read_config(home / "config.yaml")
    capacity = Capacity.detect()
    if file.capacity is not None:
        text = file.capacity if isinstance(file.capacity, str) else ",".join(
            f"{k}={v}" for k, v in file.capacity.items()
        )
        try:
            capacity = Capacity.parse(text, base=capacity)
        except ConfigError as err:
            raise ConfigError(f"{home / 'config.yaml'}: {err}") from None
    if env.get("CONVEYOR_CAPACITY"):
        capacity = Capacity.parse(env["CONVEYOR_CAPACITY"], base=capacity)
    db_url = env.get("CONVEYOR_DB_URL") or file.db_url or f"sqlite:///{home / 'conveyor.db'}"
    storage = env.get("CONVEYOR_STORAGE_ROOT") or file.storage_root or str(home / "folders")
    grace = env.get("CONVEYOR_KILL_GRACE") or file.kill_grace or 10.0
    try:
        kill_grace = float(grace)
    except ValueError:
        raise ConfigError(f"CONVEYOR_KILL_GRACE={grace!r} is not a number of seconds") from None
    executor = env.get("CONVEYOR_EXECUTOR") or file.executor or "local"
    if executor not in ("local", "ray"):
        raise ConfigError(f"CONVEYOR_EXECUTOR={executor!r}: choose local or ray")
    return Settings(
        home=home,
        db_url=db_url,
        storage_root=Path(storage).expanduser().absolute(),
        capacity=capacity,
        kill_grace=kill_grace,
        executor=executor,
        ray_address=env.get("CONVEYOR_RAY_ADDRESS") or file.ray_address,
    )


def _read_config(path: Path) -> _ConfigFile:
    if not path.exists():
        return _ConfigFile()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return _ConfigFile.model_validate(data)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}: {field}: {first['msg']}; known keys: db_url, storage_root, capacity,"
            " kill_grace, executor, ray_address"
        ) from None
