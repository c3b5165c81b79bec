"""/api/services: model services started with `conveyor serve` or by a pipeline's service task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from conveyor.server.deps import SettingsDep, StoreDep
from conveyor.server.errors import ApiError
from conveyor.serving import catalog

router = APIRouter(tags=["services"])


class TokenRequest(BaseModel):
    hours: float = Field(default=24.0, gt=0, le=24 * 365)


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=128, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0, le=2)


@router.get("/services")
def list_services(store: StoreDep, settings: SettingsDep) -> list[dict]:
    return [catalog.describe(settings, record) for record in store.list_services()]


@router.get("/services/{name}")
def get_service(name: str, store: StoreDep, settings: SettingsDep) -> dict:
    return catalog.describe(settings, catalog.find(store, name))


@router.post("/services/{name}/stop", status_code=202)
def stop(name: str, store: StoreDep, settings: SettingsDep) -> dict:
    """Ask the service's host process to stop it; it drains and stops its replicas."""
    record = catalog.find(store, name)
    if catalog.state(record) != "STOPPED":
        catalog.request_stop(store, record)
    return catalog.describe(settings, catalog.find(store, name))


@router.post("/services/{name}/token")
def token(name: str, body: TokenRequest, store: StoreDep, settings: SettingsDep) -> dict:
    record = catalog.find(store, name)
    if record.public:
        raise ApiError(400, f"service {name} is public: it takes requests without a token",
                       "name")
    seconds = body.hours * 3600
    return {"token": catalog.token(settings, name, record.options.get("secret_env"), seconds),
            "expires_at": (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()}


@router.post("/services/{name}/chat")
def chat(name: str, body: ChatRequest, store: StoreDep, settings: SettingsDep) -> dict:
    """The browser's chat box: the server calls the endpoint, which may listen on loopback."""
    record = catalog.find(store, name)
    reply = catalog.chat(settings, record, [m.model_dump() for m in body.messages],
                         body.max_tokens, body.temperature, timeout=120)
    return {"content": reply["choices"][0]["message"]["content"], "model": reply.get("model"),
            "usage": reply.get("usage")}
