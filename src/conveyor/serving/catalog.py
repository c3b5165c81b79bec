"""What the CLI and the server say about services and do to them: find one, its state, its
endpoint, its description as JSON, a token for it, a chat call, a request to stop."""

from __future__ import annotations

import os
import signal

from conveyor.errors import NotFoundError, UsageError
from conveyor.processes import HOST, owner_pid
from conveyor.settings import Settings
from conveyor.store.repository import Store
from conveyor.store.services import ServiceRecord

UP = ("HEALTHY", "RUNNING")


def find(store: Store, name: str) -> ServiceRecord:
    record = store.get_service(name)
    if record is None:
        known = ", ".join(r.name for r in store.list_services()) or "none yet"
        raise NotFoundError(f"no service named {name!r}; services: {known}")
    return record


def state(record: ServiceRecord) -> str:
    from conveyor.serving.service import is_live

    if record.status not in ("STOPPED", "FAILED") and not is_live(record):
        return "STOPPED"  # its host process died without saying so
    return record.status


def endpoint(record: ServiceRecord) -> str:
    return f"http://{record.host}:{record.port}/v1"


def describe(settings: Settings, record: ServiceRecord) -> dict:
    from conveyor.serving.service import service_dir

    folder = service_dir(settings, record.name)
    return {
        "name": record.name, "status": state(record), "message": record.message,
        "endpoint": endpoint(record), "model": record.model_name, "runtime": record.runtime,
        "model_dir": record.model_dir, "public": record.public, "options": record.options,
        "pid": owner_pid(record.owner) if record.owner else None,
        "created_at": record.created_at.isoformat(), "updated_at": record.updated_at.isoformat(),
        "replicas": [{
            "number": r.number, "status": r.status, "port": r.port, "pid": r.pid,
            "restarts": r.restarts, "message": r.message, "resources": r.resources,
            "log": str(folder / f"replica-{r.number}.log"),
        } for r in record.replicas],
    }


def token(settings: Settings, name: str, secret_env: str | None, lifetime: float) -> str:
    from conveyor.serving.auth import issue_token
    from conveyor.serving.service import secret_for

    return issue_token(secret_for(settings, name, secret_env), name, lifetime)


def chat(settings: Settings, record: ServiceRecord, messages: list[dict], max_tokens: int,
         temperature: float = 0.0, timeout: float = 600.0) -> dict:
    """One chat completion from the service's endpoint; a short token is made when needed."""
    import httpx

    if state(record) not in (*UP, "DEGRADED"):
        raise UsageError(f"service {record.name} is {state(record)}; start it with"
                         " `conveyor serve`")
    headers = {} if record.public else {
        "authorization": "Bearer " + token(settings, record.name,
                                           record.options.get("secret_env"), 600)}
    try:
        reply = httpx.post(f"{endpoint(record)}/chat/completions", headers=headers,
                           timeout=timeout,
                           json={"model": record.model_name, "max_tokens": max_tokens,
                                 "temperature": temperature, "messages": messages})
    except httpx.HTTPError as err:
        raise UsageError(f"service {record.name} did not answer: {err}") from None
    if reply.status_code != 200:
        raise UsageError(f"service {record.name} answered {reply.status_code}:"
                         f" {reply.text[:300]}")
    return reply.json()


def request_stop(store: Store, record: ServiceRecord) -> None:
    """Ask the process hosting the service to stop it (the flag, and SIGTERM on this host)."""
    store.request_service_stop(record.name)
    pid = owner_pid(record.owner) if record.owner else None
    if pid is not None and record.owner.startswith(f"{HOST}:"):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
