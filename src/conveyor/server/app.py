"""The server's FastAPI app: the API routers, the web UI's files, the token check, and the
cron scheduler and webhook sender running beside them."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from conveyor import __version__
from conveyor.server import errors
from conveyor.server.api import notifications, pipelines, runs, schedules, services
from conveyor.server.notify import Notifier
from conveyor.server.scheduler import CronScheduler
from conveyor.settings import Settings
from conveyor.store.repository import Store

WEB = Path(__file__).parent / "web"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class ServerConfig:
    token: str | None  # CONVEYOR_SERVER_TOKEN: asked of every mutating call when set
    public_url: str  # where the UI is reached: links in webhooks point here
    background: bool = True  # run the cron scheduler and the webhook sender


def create_app(store: Store, settings: Settings, config: ServerConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        workers = [CronScheduler(store, settings),
                   Notifier(store, config.public_url, settings=settings)] if config.background else []
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()

    app = FastAPI(title="Conveyor", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # their pages load scripts from a CDN
    app.state.store = store
    app.state.settings = settings
    app.state.config = config
    errors.install(app)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if config.token and request.method in MUTATING and request.url.path.startswith("/api/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), config.token.encode()):
                return JSONResponse(
                    {"message": "this server asks for its admin token: send"
                                " `Authorization: Bearer $CONVEYOR_SERVER_TOKEN`",
                     "field": "authorization"}, status_code=401)
        return await call_next(request)

    for module in (pipelines, runs, services, schedules, notifications):
        app.include_router(module.router, prefix="/api")

    @app.get("/api/info")
    def info() -> dict:
        return {"version": __version__, "capacity": settings.capacity.describe(),
                "storage_root": str(settings.storage_root),
                "token_required": bool(config.token)}

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})

    return app
