"""Statuses and the moves the engine may make between them."""

from __future__ import annotations

import pytest

from conveyor.pipelines.state import (
    RUN_MOVES,
    TASK_MOVES,
    IllegalMove,
    RunStatus,
    TaskStatus,
    check_run_move,
    check_task_move,
)

T, R = TaskStatus, RunStatus


@pytest.mark.parametrize(("old", "new"), [
    (T.PENDING, T.RUNNING), (T.PENDING, T.WAITING), (T.PENDING, T.SKIPPED),
    (T.PENDING, T.UPSTREAM_FAILED), (T.PENDING, T.FAILED), (T.WAITING, T.RUNNING),
    (T.RUNNING, T.SUCCEEDED), (T.RUNNING, T.FAILED), (T.RUNNING, T.CANCELLED),
    (T.RUNNING, T.PENDING), (T.FAILED, T.PENDING), (T.CANCELLED, T.PENDING),
    (T.UPSTREAM_FAILED, T.PENDING),
])
def test_legal_task_moves(old, new) -> None:
    check_task_move(old, new)


@pytest.mark.parametrize(("old", "new"), [
    (T.SUCCEEDED, T.PENDING), (T.SUCCEEDED, T.RUNNING), (T.SKIPPED, T.PENDING),
    (T.PENDING, T.SUCCEEDED), (T.WAITING, T.PENDING), (T.RUNNING, T.RUNNING),
    (T.RUNNING, T.SKIPPED), (T.FAILED, T.RUNNING), (T.CANCELLED, T.SUCCEEDED),
])
def test_illegal_task_moves(old, new) -> None:
    with pytest.raises(IllegalMove, match=f"task cannot move from {old} to {new}"):
        check_task_move(old, new)


def test_finished_tasks_leave_only_to_be_run_again() -> None:
    for status in TaskStatus:
        if status.finished:
            assert TASK_MOVES[status] <= {T.PENDING}, status
        else:
            assert TASK_MOVES[status], status
    assert {s for s in TaskStatus if s.done_well} == {T.SUCCEEDED, T.SKIPPED}
    assert {s for s in TaskStatus if not s.finished} == {T.PENDING, T.WAITING, T.RUNNING}


@pytest.mark.parametrize(("old", "new"), [
    (R.PENDING, R.RUNNING), (R.PENDING, R.CANCELLED), (R.RUNNING, R.SUCCEEDED),
    (R.RUNNING, R.FAILED), (R.RUNNING, R.CANCELLED), (R.FAILED, R.RUNNING),
    (R.CANCELLED, R.RUNNING),
])
def test_legal_run_moves(old, new) -> None:
    check_run_move(old, new)


@pytest.mark.parametrize(("old", "new"), [
    (R.SUCCEEDED, R.RUNNING), (R.PENDING, R.SUCCEEDED), (R.RUNNING, R.PENDING),
    (R.FAILED, R.SUCCEEDED),
])
def test_illegal_run_moves(old, new) -> None:
    with pytest.raises(IllegalMove, match=f"run cannot move from {old} to {new}"):
        check_run_move(old, new)


def test_every_status_has_its_moves() -> None:
    assert set(TASK_MOVES) == set(TaskStatus)
    assert set(RUN_MOVES) == set(RunStatus)
    assert {s for s in RunStatus if s.finished} == {R.SUCCEEDED, R.FAILED, R.CANCELLED}
