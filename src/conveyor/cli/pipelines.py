"""`conveyor validate / run / resume / runs / status / logs / cancel`."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from conveyor.cli.render import run_table, runs_table
from conveyor.errors import RunBusyError
from conveyor.executors.placement import join_cluster
from conveyor.pipelines import runs as run_files
from conveyor.pipelines.resources import Capacity
from conveyor.pipelines.scheduler import RunEngine
from conveyor.pipelines.spec import load_pipeline
from conveyor.pipelines.state import RunStatus, TaskStatus
from conveyor.processes import owner_is_alive
from conveyor.settings import Settings, load_settings
from conveyor.store.repository import Store

console = Console(highlight=False)
notes = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RunArg = Annotated[str, typer.Argument(help="Run id, or a unique prefix of it.")]


def register(app: typer.Typer) -> None:
    for command in (validate, run, resume, runs, status, logs, cancel):
        app.command()(command)
    app.command("engine", hidden=True)(engine)


def _open() -> tuple[Settings, Store]:
    settings = load_settings()
    return settings, Store(settings.db_url)


def validate(
    file: Annotated[Path, typer.Argument(help="The pipeline.yaml to check.")],
    capacity: Annotated[
        str | None,
        typer.Option(help="Check against this machine instead of this one, e.g. cpu=8,mem=64g,gpu=4."),
    ] = None,
) -> None:
    """Check a pipeline file without running anything; problems print as file:line: field."""
    machine = load_settings().capacity
    if capacity:
        machine = Capacity.parse(capacity, base=machine)
    pipeline = load_pipeline(file, machine)
    console.print(
        f"{file}: ok — pipeline {pipeline.name!r}, {len(pipeline.tasks)} tasks,"
        f" fits {machine.describe()}",
        markup=False,
    )


def run(
    file: Annotated[Path, typer.Argument(help="The pipeline.yaml to run.")],
    skip: Annotated[list[str], typer.Option(help="Mark this task skipped (repeatable).")] = [],
    only: Annotated[list[str], typer.Option(help="Run only this task (repeatable).")] = [],
    env: Annotated[list[str], typer.Option(help="Set NAME=value for every task (repeatable).")] = [],
    detach: Annotated[bool, typer.Option(help="Run in the background; print the id and return.")] = False,
    executor: Annotated[str | None, typer.Option(help="local (this machine) or ray (a Ray"
                                                 " cluster); default: CONVEYOR_EXECUTOR, else local.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="The Ray head's host:port (default:"
                                                    " CONVEYOR_RAY_ADDRESS, else auto).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a pipeline: tasks in dependency order, in parallel as far as the machine allows."""
    settings, store = _open()
    run_id = run_files.create_run(
        store, settings, file, skip=skip, only=only, env=run_files.parse_env_pairs(env),
        executor=executor or settings.executor, ray_address=ray_address or settings.ray_address,
    )
    _announce(run_id, store)
    if detach:
        log_file = run_files.start_detached(settings, run_id)
        notes.print(f"running in the background; engine log: {log_file}", markup=False)
        if as_json:
            console.print_json(json.dumps({"id": run_id}))
        return
    _foreground(settings, store, run_id, as_json)


def resume(run_id: RunArg, detach: Annotated[bool, typer.Option()] = False,
           as_json: JsonOption = False) -> None:
    """Run again what did not succeed (failed, cancelled, interrupted); keep the rest."""
    settings, store = _open()
    record = store.get_run(run_id)
    if record.status == RunStatus.SUCCEEDED:
        notes.print(f"run {record.id} already succeeded; nothing to resume", markup=False)
        return
    if record.owner and owner_is_alive(record.owner):
        raise RunBusyError(f"run {record.id} is still being executed by {record.owner}")
    _announce(record.id, store, verb="resuming")
    if detach:
        run_files.start_detached(settings, record.id)
        return
    _foreground(settings, store, record.id, as_json)


def engine(run_id: str) -> None:
    """Execute a run in this process (what --detach starts); SIGTERM cancels it."""
    settings, store = _open()
    engine_ = RunEngine(store, settings, run_id)
    signal.signal(signal.SIGTERM, lambda *_: engine_.cancel())
    final = engine_.execute()
    raise typer.Exit(0 if final == RunStatus.SUCCEEDED else 1)


def runs(as_json: JsonOption = False,
         limit: Annotated[int, typer.Option(help="How many runs to list.")] = 50) -> None:
    """List runs, newest first."""
    _, store = _open()
    records = store.list_runs(limit)
    if as_json:
        console.print_json(json.dumps(
            [run_files.run_summary_json(r) for r in records]
        ))
    else:
        console.print(runs_table(records, [run_files.engine_state(r) for r in records]))


def status(run_id: RunArg, as_json: JsonOption = False) -> None:
    """Show a run and its tasks: status, attempts, exit codes, times, CPU and memory used,
    resources given."""
    _, store = _open()
    _print_final(store, store.get_run(run_id).id, as_json)


def logs(
    run_id: RunArg,
    task: Annotated[str, typer.Argument(help="Task name.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the task ends.")] = False,
    attempt: Annotated[int | None, typer.Option(help="Only this attempt (1, 2, ...).")] = None,
) -> None:
    """Print a task's output (stdout and stderr, every attempt) in order."""
    _, store = _open()
    record = store.get_run(run_id)
    record.task(task)
    last_id, last_attempt = 0, None
    out = sys.stdout
    while True:
        lines = store.read_logs(record.id, task, after_id=last_id, attempt=attempt)
        for line in lines:
            if line.attempt != last_attempt and attempt is None and last_attempt is not None:
                out.write(f"--- attempt {line.attempt} ---\n")
            last_attempt = line.attempt
            prefix = f"[node {line.rank}] " if line.rank else ""
            out.write(f"{prefix}{line.text}\n")
        out.flush()
        if lines:
            last_id = lines[-1].id
            continue
        if not follow:
            return
        current = store.get_run(record.id)
        if TaskStatus(current.task(task).status).finished or current.status in ("succeeded", "failed", "cancelled"):
            if not store.read_logs(record.id, task, after_id=last_id, attempt=attempt, limit=1):
                return
        time.sleep(0.3)


def cancel(run_id: RunArg,
           wait: Annotated[float, typer.Option(help="Seconds to wait for the run to stop.")] = 30.0) -> None:
    """Stop a run: running tasks get SIGTERM (then SIGKILL), waiting ones never start."""
    settings, store = _open()
    record = store.get_run(run_id)
    if RunStatus(record.status).finished:
        notes.print(f"run {record.id} already {record.status}; nothing to cancel", markup=False)
        return
    if record.owner and owner_is_alive(record.owner) is not False:
        store.request_cancel(record.id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if RunStatus(store.get_run(record.id).status).finished:
                break
            time.sleep(0.2)
        else:
            notes.print(f"cancel requested; run {record.id} is still stopping", markup=False)
            return
    else:
        RunEngine(store, settings, record.id).cancel_abandoned()
    notes.print(f"run {record.id} {store.get_run(record.id).status}", markup=False)


def _announce(run_id: str, store: Store, verb: str = "run") -> None:
    record = store.get_run(run_id)
    notes.print(f"{verb} {record.id} · pipeline {record.pipeline}", markup=False)


def _foreground(settings: Settings, store: Store, run_id: str, as_json: bool) -> None:
    """Execute in a worker thread; the main thread draws the live table and turns ^C into cancel."""
    join_cluster(store.get_run(run_id).options)
    engine_ = RunEngine(store, settings, run_id)
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["status"] = engine_.execute()
        except BaseException as err:  # handed to the main thread, raised there
            outcome["error"] = err

    worker = threading.Thread(target=work, name="engine")
    previous = signal.signal(signal.SIGTERM, lambda *_: engine_.cancel())
    worker.start()
    try:
        _watch(worker, store, run_id, live=not as_json and console.is_terminal)
    except KeyboardInterrupt:
        notes.print("cancelling: stopping running tasks…")
        engine_.cancel()
        worker.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]
    _print_final(store, run_id, as_json)
    raise typer.Exit(0 if outcome.get("status") == RunStatus.SUCCEEDED else 1)


def _watch(worker: threading.Thread, store: Store, run_id: str, live: bool) -> None:
    if not live:
        while worker.is_alive():
            worker.join(0.2)
        return
    with Live(run_table(store.get_run(run_id)), console=console, refresh_per_second=4,
              transient=True) as view:
        while worker.is_alive():
            worker.join(0.25)
            view.update(run_table(store.get_run(run_id)))


def _print_final(store: Store, run_id: str, as_json: bool) -> None:
    record = store.get_run(run_id)
    state = run_files.engine_state(record)
    usage = store.run_usage(record.id)
    if as_json:
        console.print_json(json.dumps(run_files.run_as_json(record, usage)))
    else:
        console.print(run_table(record, state, usage))
        if record.message:
            notes.print(record.message, markup=False)
