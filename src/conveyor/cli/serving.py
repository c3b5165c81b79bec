"""`conveyor serve / services / service / token / stop`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from conveyor.errors import UsageError
from conveyor.pipelines.resources import parse_duration, parse_size
from conveyor.pipelines.runs import parse_env_pairs
from conveyor.processes import HOST
from conveyor.settings import Settings, load_settings
from conveyor.serving import catalog
from conveyor.store.repository import Store
from conveyor.store.services import ServiceRecord

console = Console(highlight=False)
notes = Console(stderr=True, highlight=False)
TOKEN_LIFETIME = "24h"
DETACHED = "CONVEYOR_SERVICE_DETACHED"  # set for the background process of `serve --detach`

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArg = Annotated[str, typer.Argument(help="The service's name.")]


def register(app: typer.Typer) -> None:
    for command in (serve, services, service, token, ask, stop):
        app.command()(command)


def _open() -> tuple[Settings, Store]:
    settings = load_settings()
    return settings, Store(settings.db_url)


def serve(
    model_dir: Annotated[Path, typer.Argument(help="The model folder: Hugging Face files, a"
                                              " *.gguf, or a model-definition.yaml.")],
    name: Annotated[str | None, typer.Option(help="Service and model name (default:"
                                             " BACKEND_MODEL_NAME, else the folder name).")] = None,
    runtime: Annotated[str, typer.Option(help="auto, builtin, llamacpp, vllm, tgi, sglang, nim,"
                                         " cmd or custom.")] = "auto",
    host: Annotated[str, typer.Option(help="Where the gateway listens.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The gateway's port (0: any free one).")] = 8000,
    replicas: Annotated[int, typer.Option(help="Replicas to start.")] = 1,
    min_replicas: Annotated[int | None, typer.Option(help="Autoscale down to this many.")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscale up to this many.")] = None,
    public: Annotated[bool, typer.Option("--public", help="Take requests without a token.")] = False,
    token_secret_env: Annotated[str | None, typer.Option(
        help="Sign tokens with the secret in this environment variable.")] = None,
    env: Annotated[list[str], typer.Option(help="NAME=value for the runtime (repeatable).")] = [],
    command: Annotated[str | None, typer.Option(help="The cmd runtime's command; it listens on"
                                                " $PORT.")] = None,
    cpu: Annotated[float, typer.Option(help="CPU cores per replica.")] = 1.0,
    mem: Annotated[str, typer.Option(help="Memory per replica, e.g. 4g.")] = "0",
    gpu: Annotated[float | None, typer.Option(help="GPU share per replica, e.g. 0.5 (default: 1"
                                              " where there are GPUs, else 0).")] = None,
    startup_timeout: Annotated[str, typer.Option(help="Time a replica has to become healthy.")] = "5m",
    scale_up_at: Annotated[float, typer.Option(help="Add a replica above this many in-flight"
                                               " requests per replica.")] = 4.0,
    scale_down_at: Annotated[float, typer.Option(help="Remove one below this many.")] = 0.5,
    cooldown: Annotated[str, typer.Option(help="Pause between scaling steps.")] = "30s",
    detach: Annotated[bool, typer.Option(help="Host the service in the background; return once"
                                         " it is up.")] = False,
    cluster: Annotated[str | None, typer.Option(help="Where replicas run: local (this machine) or"
                                                " ray (nodes of a Ray cluster; the gateway stays"
                                                " here); default: CONVEYOR_EXECUTOR, else"
                                                " local.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="The Ray head's host:port (default:"
                                                    " CONVEYOR_RAY_ADDRESS, else auto).")] = None,
    scaling_group: Annotated[str | None, typer.Option(help="Ray: place replicas only on nodes"
                                                      " with this custom resource.")] = None,
) -> None:
    """Serve a model folder behind an OpenAI-compatible gateway."""
    from conveyor.serving.service import plan_service

    settings, store = _open()
    try:
        memory, startup, pause = parse_size(mem), parse_duration(startup_timeout), \
            parse_duration(cooldown)
    except ValueError as err:
        raise UsageError(f"serve: {err}") from None
    spec = plan_service(
        model_dir, settings=settings, name=name, runtime=runtime, host=host, port=port,
        replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas, public=public,
        secret_env=token_secret_env, env=parse_env_pairs(env), command=command, cpu=cpu,
        mem=memory, gpu=gpu, startup_timeout=startup, scale_up_at=scale_up_at,
        scale_down_at=scale_down_at, cooldown=pause, cluster=cluster, ray_address=ray_address,
        scaling_group=scaling_group)
    if detach:
        _serve_detached(settings, store, spec.name, startup)
        return
    if port == 0 and not os.environ.get(DETACHED):
        raise UsageError("--port 0 (any free port) needs --detach, which reports the port chosen")
    _announce(settings, spec.name, spec.model_name, spec.runtime, f"http://{host}:{port}/v1",
              spec.public, spec.secret_env)
    notes.print("Ctrl-C or `conveyor stop " + spec.name + "` stops it.", markup=False)
    _host(spec, store, settings)


def _host(spec, store: Store, settings: Settings) -> None:
    from conveyor.serving.service import ServiceHost

    logging.getLogger("conveyor.serving").setLevel(logging.INFO)
    host = ServiceHost(spec, store, settings)
    with asyncio.Runner(loop_factory=_fast_loop()) as runner:
        runner.run(host.run())
    notes.print(f"service {spec.name} stopped", markup=False)


def _fast_loop():
    try:
        import uvloop
    except ModuleNotFoundError:
        return None
    return uvloop.new_event_loop


def _serve_detached(settings: Settings, store: Store, name: str, startup: float) -> None:
    from conveyor.serving.service import service_dir

    log_file = service_dir(settings, name) / "service.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [a for a in sys.argv[1:] if a != "--detach"]
    with open(log_file, "ab") as out:
        child = subprocess.Popen([sys.executable, "-m", "conveyor", *argv], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=dict(os.environ, CONVEYOR_HOME=str(settings.home),
                                          **{DETACHED: "1"}))
    deadline = time.monotonic() + startup + 5  # the process itself takes a moment to start
    mine = f"{HOST}:{child.pid}:"
    while True:
        record = store.get_service(name)
        if record is not None and (record.owner or "").startswith(mine):
            if record.status in catalog.UP:
                _announce(settings, name, record.model_name, record.runtime, catalog.endpoint(record),
                          record.public, record.options.get("secret_env"))
                return
            if record.status == "FAILED":
                raise UsageError(f"service {name} failed to start: {record.message}"
                                 f" (log: {log_file})")
        if child.poll() is not None:
            raise UsageError(f"service {name} stopped while starting; see {log_file}")
        if time.monotonic() > deadline:
            store.request_service_stop(name)  # it stops its replicas, then itself
            try:
                child.wait(timeout=settings.kill_grace + 10)
            except subprocess.TimeoutExpired:
                child.kill()
            why = _latest_trouble(record)
            raise UsageError(f"service {name} was not up within {startup:g} s{why}; stopped it"
                             f" (see {log_file})")
        time.sleep(0.2)


def _latest_trouble(record: ServiceRecord | None) -> str:
    """What the replicas last said went wrong, as `: reason`, or nothing."""
    if record is None:
        return ""
    said = [r.message for r in record.replicas if r.message and r.status != "HEALTHY"]
    if not said and record.message:
        said = [record.message]
    return f": {said[0]}" if said else ""


def _announce(settings: Settings, name: str, model: str, runtime: str, endpoint: str,
              public: bool, secret_env: str | None) -> None:
    console.print(f"service {name}: {endpoint}  model {model}  runtime {runtime}", markup=False)
    if not public:
        token_text = catalog.token(settings, name, secret_env, parse_duration(TOKEN_LIFETIME))
        console.print(f"token (valid {TOKEN_LIFETIME}; `conveyor token {name}` makes more):"
                      f"\n  Authorization: Bearer {token_text}", markup=False, soft_wrap=True)












def services(as_json: JsonOption = False) -> None:
    """List services: status, endpoint, model, runtime and replicas."""
    settings, store = _open()
    records = store.list_services()
    if as_json:
        console.print_json(json.dumps([catalog.describe(settings, r) for r in records]))
        return
    table = Table("service", "status", "endpoint", "model", "runtime", "replicas")
    for record in records:
        up = sum(1 for r in record.replicas if r.status in catalog.UP)
        live = sum(1 for r in record.replicas if r.status != "TERMINATED")
        table.add_row(record.name, catalog.state(record), catalog.endpoint(record), record.model_name,
                      record.runtime, f"{up}/{live} up")
    console.print(table)


def service(name: NameArg, as_json: JsonOption = False) -> None:
    """One service: status, endpoint, and each replica's health."""
    settings, store = _open()
    record = catalog.find(store, name)
    if as_json:
        console.print_json(json.dumps(catalog.describe(settings, record)))
        return
    console.print(f"service {record.name}: {catalog.state(record)}  {catalog.endpoint(record)}  model"
                  f" {record.model_name}  runtime {record.runtime}"
                  f"{'  public' if record.public else ''}", markup=False)
    if record.message:
        console.print(f"  {record.message}", markup=False)
    table = Table("replica", "status", "port", "pid", "restarts", "message")
    for r in record.replicas:
        table.add_row(str(r.number), r.status, str(r.port), str(r.pid or ""), str(r.restarts),
                      r.message or "")
    console.print(table)


def token(
    name: NameArg,
    lifetime: Annotated[str, typer.Option(help="How long the token is valid, e.g. 1h, 30d.")] =
    TOKEN_LIFETIME,
) -> None:
    """Print a bearer token for a service."""
    settings, store = _open()
    record = catalog.find(store, name)
    if record.public:
        raise UsageError(f"service {name} is public: it takes requests without a token")
    try:
        seconds = parse_duration(lifetime)
    except ValueError as err:
        raise UsageError(f"--lifetime: {err}") from None
    print(catalog.token(settings, name, record.options.get("secret_env"), seconds))


def ask(
    name: NameArg,
    questions: Annotated[list[str], typer.Argument(help="Questions, each sent on its own.")],
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 answers greedily.")] = 0.0,
    as_json: JsonOption = False,
) -> None:
    """Ask a running service questions through its OpenAI-compatible chat API."""
    settings, store = _open()
    record = catalog.find(store, name)
    answers = []
    for question in questions:
        body = catalog.chat(settings, record, [{"role": "user", "content": question}],
                            max_tokens, temperature)
        answers.append({"question": question, "answer": body["choices"][0]["message"]["content"],
                        "usage": body.get("usage")})
    if as_json:
        console.print_json(json.dumps(answers, ensure_ascii=False))
        return
    for item in answers:
        console.print(f"Q: {item['question']}\nA: {item['answer'].strip()}\n", markup=False,
                      soft_wrap=True)


def stop(name: NameArg) -> None:
    """Stop a service: its gateway and all its replicas."""
    from conveyor.serving.service import is_live, kill_leftovers

    settings, store = _open()
    record = catalog.find(store, name)
    if is_live(record):
        catalog.request_stop(store, record)
        deadline = time.monotonic() + settings.kill_grace + 15
        while time.monotonic() < deadline and is_live(catalog.find(store, name)):
            time.sleep(0.2)
    record = catalog.find(store, name)
    if is_live(record):
        raise UsageError(f"service {name} did not stop within {settings.kill_grace + 15:g} s")
    kill_leftovers(record)
    if record.status != "STOPPED":
        store.update_service(name, status="STOPPED", message="stopped")
    console.print(f"service {name} stopped", markup=False)
