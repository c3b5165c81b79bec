"""The contract between the engine and whatever runs processes: four methods, no policy.

The engine decides what runs when; an executor only starts shell commands,
streams their output to a sink, stops them on request, and reports each exit.
"""

from __future__ import annotations

import queue
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from conveyor.pipelines.resources import Request

from conveyor.executors.usage import Usage


@dataclass(frozen=True)
class JobKey:
    """One process of one attempt of one task."""

    run_id: str
    task: str
    attempt: int
    rank: int = 0


@dataclass(frozen=True)
class Launch:
    key: JobKey
    command: str
    cwd: Path
    env: dict[str, str]
    # where it may run: a cluster executor places the job by these; the local one has its grant
    request: Request = Request()
    scaling_group: str | None = None
    cluster_size: int = 1


@dataclass(frozen=True)
class Started:
    key: JobKey
    host: str
    pid: int | None  # also the process group id: each job is its own session
    started: float | None  # the process's start time, to recognise it after a crash


@dataclass(frozen=True)
class Exit:
    key: JobKey
    exit_code: int | None  # 128 + signal number when killed by a signal
    signal: int | None = None
    error: str | None = None  # the process could not be started at all
    usage: Usage | None = None  # what its process tree used, where the executor measures it

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.signal:
            return f"killed by {signal.Signals(self.signal).name}"
        return f"exit code {self.exit_code}"


def next_exit(exits: queue.Queue[Exit], timeout: float) -> Exit | None:
    """`Executor.wait` for executors that queue their exits as they learn of them."""
    try:
        return exits.get(timeout=max(timeout, 0))
    except queue.Empty:
        return None


# (job, stream "stdout"/"stderr", unix time, text of one line without its newline)
OutputSink = Callable[[JobKey, str, float, str], None]


class Executor(Protocol):
    def start(self, launch: Launch) -> Started:
        """Start the command; a failure to start is reported later by `wait` as an Exit."""

    def wait(self, timeout: float) -> Exit | None:
        """The next exit, or None if none came within `timeout` seconds."""

    def stop(self, key: JobKey, grace: float) -> None:
        """SIGTERM the job's whole process group, SIGKILL it after `grace` seconds."""

    def close(self) -> None:
        """Stop everything still running and free the executor's threads."""
