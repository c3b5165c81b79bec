"""The engine that drives one run: ready -> acquire resources -> start -> wait -> record.

`RunEngine.execute` takes a run from whatever state the store holds to its end:
a fresh run, a resumed one (failed, cancelled and upstream_failed tasks run
again) or one whose engine died (its leftover processes are killed and the
tasks it was running start over). One engine per run at a time: it claims the
run in the store first, and every task start is a compare-and-set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from conveyor import resource_ledger
from conveyor.errors import RunBusyError
from conveyor.executors.base import Executor, Exit, JobKey, OutputSink
from conveyor.executors.placement import Placement, placement_for
from conveyor.executors.usage import add_up
from conveyor.pipelines import graph, session
from conveyor.pipelines.resources import Grant, ResourcePool, why_never_fits
from conveyor.pipelines.spec import Pipeline, Task, parse_pipeline
from conveyor.pipelines.state import RunStatus, TaskStatus, check_task_move
from conveyor.processes import HOST, kill_group, owner_is_alive, start_time, this_process_id
from conveyor.settings import Settings
from conveyor.store.log_writer import LogWriter
from conveyor.store.repository import RunRecord, Store, now

log = logging.getLogger(__name__)

T = TaskStatus
HEARTBEAT_EVERY = 5.0  # seconds between lease renewals
POLL_EVERY = 0.5  # seconds between checks for a cancel asked by another process
STALE_AFTER = 60.0  # a lease on another host not renewed for this long is abandoned

ExecutorFactory = Callable[[OutputSink], Executor]


@dataclass
class _Attempt:
    """One attempt of a task in flight: its processes (one per node) and their exits."""

    task: Task
    attempt_id: int
    number: int
    grants: list[Grant]
    deadline: float | None
    exits: dict[int, Exit] = field(default_factory=dict)
    stop_reason: str | None = None  # why the engine stopped it: timeout, cancelled, a node failed

    @property
    def finished(self) -> bool:
        return len(self.exits) == len(self.grants)


class RunEngine:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        run_id: str,
        executor_factory: ExecutorFactory | None = None,  # None: the run's own (local or Ray)
    ):
        self._store = store
        self._settings = settings
        self._run_id = run_id
        self._executor_factory = executor_factory
        self._cancel = threading.Event()
        self._owner = this_process_id()

    def cancel(self) -> None:
        """Stop the run: running tasks get SIGTERM, waiting ones never start. Thread-safe."""
        self._cancel.set()

    def execute(self) -> RunStatus:
        """Run every task that has not succeeded or been skipped; return the run's final status."""
        return self._drive(lambda drive: drive.to_the_end())

    def cancel_abandoned(self) -> RunStatus:
        """Cancel a run that no live engine executes: kill its leftovers, mark what did not finish."""
        return self._drive(lambda drive: drive.cancel_now(), starts_tasks=False)

    def _drive(self, how: Callable[[_Drive], RunStatus], starts_tasks: bool = True) -> RunStatus:
        run = self._store.get_run(self._run_id)
        self._run_id = run.id
        if RunStatus(run.status) == RunStatus.SUCCEEDED:
            return RunStatus.SUCCEEDED
        # a cancel starts nothing: it needs no cluster, which may be gone
        options = run.options if starts_tasks else dict(run.options, executor="local")
        placement = placement_for(
            options, self._settings,
            [self._settings.storage_root, self._settings.runs_root, Path(run.pipeline_file).parent])
        if self._executor_factory is not None:
            placement = replace(placement, factory=self._executor_factory)
        self._claim(run)
        logs = LogWriter(self._store)
        executor = placement.factory(self._sink(logs))
        try:
            return how(_Drive(self, run, executor, logs, placement))
        finally:
            executor.close()
            logs.close()
            self._store.release_run(self._run_id, self._owner)

    def _sink(self, logs: LogWriter) -> OutputSink:
        def sink(key: JobKey, stream: str, at: float, text: str) -> None:
            logs.write({"run_id": key.run_id, "task": key.task, "attempt": key.attempt,
                        "rank": key.rank, "stream": stream, "at": at, "text": text})
        return sink

    def _claim(self, run: RunRecord) -> None:
        replacing = None
        if run.owner is not None:
            alive = owner_is_alive(run.owner)
            if alive is None:  # another host: trust its heartbeat
                age = time.time() - run.heartbeat_at.timestamp() if run.heartbeat_at else 1e9
                alive = age < STALE_AFTER
            if alive:
                raise RunBusyError(
                    f"run {run.id} is being executed by {run.owner}; wait for it or"
                    f" `conveyor cancel {run.id}`"
                )
            replacing = run.owner
        if not self._store.claim_run(run.id, self._owner, replacing):
            raise RunBusyError(f"run {run.id} was just taken by another Conveyor process")


class _Drive:
    """The state of one execution; lives for one call of `RunEngine.execute`."""

    def __init__(self, engine: RunEngine, run: RunRecord, executor: Executor, logs: LogWriter,
                 placement: Placement):
        self.engine = engine
        self.placement = placement
        self.store = engine._store
        self.run = run
        self.executor = executor
        self.logs = logs
        self.pipeline: Pipeline = parse_pipeline(run.spec_text, run.pipeline_file)
        self.ctx = session.RunContext(
            run_id=run.id,
            pipeline=self.pipeline,
            pipeline_dir=Path(run.pipeline_file).parent,
            env_overrides=dict(run.options.get("env", {})),
            settings=engine._settings,
            capacity=placement.capacity,
        )
        self.tasks = {task.name: task for task in self.pipeline.tasks}
        self.pool = ResourcePool(placement.capacity)
        self.order = graph.topological_order(self.pipeline.dependencies)
        self.status = {t.name: T(t.status) for t in run.tasks}
        self.attempts = {t.name: t.attempts for t in run.tasks}
        self.tries = {name: 0 for name in self.status}  # attempts made by this execution
        self.not_before: dict[str, float] = {}
        self.active: dict[str, _Attempt] = {}
        self.cancelling = False
        self.last_heartbeat = self.last_poll = time.monotonic()

    # the loop

    def to_the_end(self) -> RunStatus:
        self._recover()
        self._reopen_unfinished()
        if self.run.status != RunStatus.RUNNING:
            self.store.set_run_status(self.run.id, RunStatus.RUNNING)
        while True:
            self._check_cancel()
            self._settle_blocked()
            if not self.cancelling:
                self._start_ready()
            if not self.active and not self._unfinished():
                break
            exit_ = self.executor.wait(self._next_wake())
            if exit_ is not None:
                self._on_exit(exit_)
            self._enforce_deadlines()
            self._heartbeat()
        final = self._final_status()
        self.store.set_run_status(self.run.id, final, self._summary(final))
        return final

    def cancel_now(self) -> RunStatus:
        self._recover(interrupted=T.CANCELLED)
        for name in self._unfinished():
            self._move(name, T.CANCELLED, message="cancelled before it started")
        self.store.set_run_status(self.run.id, RunStatus.CANCELLED, "cancelled")
        return RunStatus.CANCELLED

    def _unfinished(self) -> list[str]:
        return [n for n in self.order if self.status[n] in (T.PENDING, T.WAITING)]

    def _next_wake(self) -> float:
        wake = POLL_EVERY
        now = time.monotonic()
        for attempt in self.active.values():
            if attempt.deadline is not None:
                wake = min(wake, attempt.deadline - now)
        for ready_at in self.not_before.values():
            wake = min(wake, ready_at - now)
        return max(wake, 0.0)

    # status changes

    def _move(self, name: str, new: TaskStatus, **values) -> None:
        old = self.status[name]
        check_task_move(old, new)
        if not self.store.move_task(self.run.id, name, old, new, **values):
            raise RunBusyError(f"task {name} of run {self.run.id} was changed by another process")
        self.status[name] = new

    def _recover(self, interrupted: TaskStatus = T.FAILED) -> None:
        """Kill what a dead engine left running and mark its tasks as interrupted."""
        for attempt in self.store.open_attempts(self.run.id):
            for process in attempt.processes:
                if attempt.host == HOST:
                    _kill_leftover(process.get("pid"), process.get("started"))
            self.store.close_attempt(attempt.id, "interrupted")
        for name in self.order:
            if self.status[name] == T.RUNNING:
                self._move(name, interrupted, finished_at=now(),
                           message="interrupted: the engine running it stopped")
            elif self.status[name] == T.WAITING:
                self._move(name, T.CANCELLED, message="interrupted while waiting")

    def _reopen_unfinished(self) -> None:
        """Resume: every task that did not succeed and was not skipped runs again."""
        for name in self.order:
            if self.status[name] in (T.FAILED, T.CANCELLED, T.UPSTREAM_FAILED):
                self._move(name, T.PENDING, message="resumed", exit_code=None)

    def _settle_blocked(self) -> None:
        """Pending tasks behind a failed dependency become upstream_failed."""
        for name in self.order:
            if self.status[name] not in (T.PENDING, T.WAITING):
                continue
            blocker = next(
                (dep for dep in self.tasks[name].dependencies if self._blocks(dep)), None
            )
            if blocker:
                self.not_before.pop(name, None)
                self._move(name, T.UPSTREAM_FAILED,
                           message=f"dependency {blocker} is {self.status[blocker]}")

    def _blocks(self, dep: str) -> bool:
        status = self.status[dep]
        if status == T.FAILED:
            return not self.tasks[dep].continue_on_failure
        return status in (T.UPSTREAM_FAILED, T.CANCELLED)

    def _satisfied(self, dep: str) -> bool:
        status = self.status[dep]
        return status.done_well or (
            status == T.FAILED and self.tasks[dep].continue_on_failure
        )

    # starting

    def _start_ready(self) -> None:
        now = time.monotonic()
        for name in self.order:
            if self.status[name] not in (T.PENDING, T.WAITING):
                continue
            task = self.tasks[name]
            if not all(self._satisfied(dep) for dep in task.dependencies):
                continue
            if self.not_before.get(name, 0) > now:
                continue
            elsewhere = resource_ledger.held_elsewhere(self.store, except_run=self.run.id) \
                if self.placement.on_this_machine else []
            grants = resource_ledger.acquire(self.pool, task.request(self.pool.capacity), task.copies,
                                             elsewhere)
            if grants is None:
                self._wait_for_room(task)
                continue
            self.not_before.pop(name, None)
            self._start(task, grants)

    def _wait_for_room(self, task: Task) -> None:
        reason = why_never_fits(task.request(self.pool.capacity), task.copies,
                                self.pool.capacity)
        if reason and not self.active:
            self._move(task.name, T.FAILED, message=f"can never run here: {reason}",
                       finished_at=now())
        elif self.status[task.name] == T.PENDING:
            self._move(task.name, T.WAITING, message="waiting for CPU, memory or GPU to free up")

    def _start(self, task: Task, grants: list[Grant]) -> None:
        number = self.attempts[task.name] + 1
        check_task_move(self.status[task.name], T.RUNNING)
        resources = _resources_given(task, grants, self.placement.executor)
        attempt_id = self.store.begin_attempt(
            self.run.id, task.name, self.status[task.name], number, HOST, resources
        )
        if attempt_id is None:
            for grant in grants:
                self.pool.release(grant)
            raise RunBusyError(f"task {task.name} of run {self.run.id} was started elsewhere")
        self.status[task.name] = T.RUNNING
        self.attempts[task.name] = number
        self.tries[task.name] += 1
        deadline = time.monotonic() + task.timeout if task.timeout else None
        attempt = _Attempt(task, attempt_id, number, grants, deadline)
        self.active[task.name] = attempt
        processes = []
        for rank, grant in enumerate(grants):
            key = JobKey(self.run.id, task.name, number, rank)
            try:
                launch = session.prepare(self.ctx, task, key, grant)
            except OSError as err:
                attempt.exits[rank] = Exit(key, None, error=f"could not prepare the session: {err}")
                continue
            started = self.executor.start(launch)
            processes.append({"rank": rank, "pid": started.pid, "started": started.started})
        self.store.record_processes(attempt_id, processes)
        if attempt.finished:
            self._finish(attempt)
        elif attempt.exits:  # a node could not even be prepared: stop the ones that started
            attempt.stop_reason = next(iter(attempt.exits.values())).describe()
            self._stop(attempt)

    # ending

    def _on_exit(self, exit_: Exit) -> None:
        attempt = self.active.get(exit_.key.task)
        if attempt is None or attempt.number != exit_.key.attempt:
            return
        attempt.exits[exit_.key.rank] = exit_
        if not exit_.ok and attempt.stop_reason is None and not attempt.finished:
            attempt.stop_reason = f"node {exit_.key.rank} failed ({exit_.describe()})"
            self._stop(attempt)
        if attempt.finished:
            self._finish(attempt)

    def _finish(self, attempt: _Attempt) -> None:
        name = attempt.task.name
        del self.active[name]
        for grant in attempt.grants:
            self.pool.release(grant)
        self.logs.flush()
        failed = [e for e in attempt.exits.values() if not e.ok]
        exit_code = failed[0].exit_code if failed else 0
        if not failed:  # including a task that finished just as it was being stopped
            new, outcome, message = T.SUCCEEDED, "succeeded", None
        elif attempt.stop_reason == "cancelled":
            new, outcome, message = T.CANCELLED, "cancelled", "cancelled"
        else:
            outcome = "failed"
            why = attempt.stop_reason or failed[0].describe()
            if failed[0].key.rank and not attempt.stop_reason:
                why = f"node {failed[0].key.rank}: {why}"
            retry = attempt.task.retry
            if self.tries[name] < retry.max_attempts and not self.cancelling:
                new = T.PENDING
                message = (f"attempt {attempt.number} failed ({why});"
                           f" retrying in {retry.delay:g}s")
                self.not_before[name] = time.monotonic() + retry.delay
            else:
                new, message = T.FAILED, why
        check_task_move(T.RUNNING, new)
        self.store.finish_attempt(
            attempt.attempt_id, self.run.id, name, new, exit_code, outcome, message,
            usage=add_up(e.usage for e in attempt.exits.values()),
        )
        self.status[name] = new

    def _stop(self, attempt: _Attempt) -> None:
        for rank in range(len(attempt.grants)):
            if rank not in attempt.exits:
                key = JobKey(self.run.id, attempt.task.name, attempt.number, rank)
                self.executor.stop(key, self.engine._settings.kill_grace)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for attempt in list(self.active.values()):
            if attempt.deadline is not None and now >= attempt.deadline and not attempt.stop_reason:
                attempt.stop_reason = f"timed out after {attempt.task.timeout:g}s"
                self._stop(attempt)

    def _check_cancel(self) -> None:
        if self.cancelling:
            return
        now = time.monotonic()
        if not self.engine._cancel.is_set() and now - self.last_poll >= POLL_EVERY:
            self.last_poll = now
            if self.store.cancel_requested(self.run.id):
                self.engine._cancel.set()
        if not self.engine._cancel.is_set():
            return
        self.cancelling = True
        for name in self._unfinished():
            self.not_before.pop(name, None)
            self._move(name, T.CANCELLED, message="cancelled before it started")
        for attempt in self.active.values():
            attempt.stop_reason = "cancelled"
            self._stop(attempt)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_heartbeat >= HEARTBEAT_EVERY:
            self.last_heartbeat = now
            if not self.store.heartbeat(self.run.id, self.engine._owner):
                log.warning("run %s: lost the lease; another process claimed it", self.run.id)

    def _final_status(self) -> RunStatus:
        if self.cancelling:
            return RunStatus.CANCELLED
        for name in self.order:
            status = self.status[name]
            if status == T.FAILED and not self.tasks[name].continue_on_failure:
                return RunStatus.FAILED
            if status in (T.UPSTREAM_FAILED, T.CANCELLED):
                return RunStatus.FAILED
        return RunStatus.SUCCEEDED

    def _summary(self, final: RunStatus) -> str | None:
        if final == RunStatus.SUCCEEDED:
            return None
        bad = [n for n in self.order if self.status[n] in (T.FAILED, T.UPSTREAM_FAILED)]
        return f"{final}: " + ", ".join(f"{n} {self.status[n]}" for n in bad) if bad else str(final)


def _kill_leftover(pid: int | None, started: float | None) -> None:
    """Kill the process group of a dead engine's task, unless its pid now names another process."""
    if not pid:
        return
    current = start_time(pid)
    if current is None or (started is not None and abs(current - started) < 0.05):
        kill_group(pid)


def _resources_given(task: Task, grants: list[Grant], executor: str) -> dict:
    given = grants[0].as_dict()
    if executor != "local":  # the cluster picks devices: the engine's GPU indices mean nothing
        given["executor"] = executor
        given["gpus"] = []
    given["gpu_shares"] = sum(share for _, share in grants[0].gpus)
    given["shmem"] = task.resource_opts.shmem
    if len(grants) > 1:
        given["nodes"] = [grant.as_dict() for grant in grants]
    return given

