"""Statuses of runs and tasks, and the moves between them that the engine may make."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"  # ready, but the machine has no room for it yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"

    @property
    def finished(self) -> bool:
        return self in _TASK_FINISHED

    @property
    def done_well(self) -> bool:
        """Dependents may start after a task in this status."""
        return self in (TaskStatus.SUCCEEDED, TaskStatus.SKIPPED)


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


_TASK_FINISHED = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.SKIPPED,
        TaskStatus.CANCELLED,
        TaskStatus.UPSTREAM_FAILED,
    }
)

_T = TaskStatus
TASK_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    # pending/waiting -> failed: the task can never fit on this machine
    _T.PENDING: frozenset(
        {_T.WAITING, _T.RUNNING, _T.SKIPPED, _T.UPSTREAM_FAILED, _T.CANCELLED, _T.FAILED}
    ),
    _T.WAITING: frozenset({_T.RUNNING, _T.UPSTREAM_FAILED, _T.CANCELLED, _T.FAILED}),
    # running -> pending is a retry; running -> failed also covers an engine that died
    _T.RUNNING: frozenset({_T.SUCCEEDED, _T.FAILED, _T.CANCELLED, _T.PENDING}),
    # resume re-runs what did not succeed
    _T.FAILED: frozenset({_T.PENDING}),
    _T.CANCELLED: frozenset({_T.PENDING}),
    _T.UPSTREAM_FAILED: frozenset({_T.PENDING}),
    _T.SUCCEEDED: frozenset(),
    _T.SKIPPED: frozenset(),
}

RUN_MOVES: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.FAILED: frozenset({RunStatus.RUNNING}),
    RunStatus.CANCELLED: frozenset({RunStatus.RUNNING}),
    RunStatus.SUCCEEDED: frozenset(),
}


class IllegalMove(RuntimeError):
    """The engine tried a status change that the state machine forbids: a bug, not user error."""


def check_task_move(old: TaskStatus, new: TaskStatus) -> None:
    if new not in TASK_MOVES[old]:
        raise IllegalMove(f"task cannot move from {old} to {new}")


def check_run_move(old: RunStatus, new: RunStatus) -> None:
    if new not in RUN_MOVES[old]:
        raise IllegalMove(f"run cannot move from {old} to {new}")
