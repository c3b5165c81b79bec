"""`conveyor server`: the REST API and web UI, with schedules and webhooks, in one process."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Annotated

import typer
from rich.console import Console

from conveyor.errors import UsageError
from conveyor.settings import load_settings
from conveyor.store.repository import Store

notes = Console(stderr=True, highlight=False)
TOKEN = "CONVEYOR_SERVER_TOKEN"


def register(app: typer.Typer) -> None:
    app.command()(server)


def server(
    host: Annotated[str, typer.Option(help="Where to listen; other than loopback needs"
                                      f" {TOKEN}.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port (0: any free one).")] = 8420,
    db: Annotated[str | None, typer.Option(help="The store's URL (default: CONVEYOR_DB_URL,"
                                           " else SQLite in CONVEYOR_HOME).")] = None,
    public_url: Annotated[str | None, typer.Option(help="How users reach this server, for"
                                                   " links in webhooks.")] = None,
) -> None:
    """Serve the web UI and REST API; start scheduled runs and send webhooks."""
    import uvicorn

    from conveyor.server.app import ServerConfig, create_app

    token = os.environ.get(TOKEN) or None
    if not token and not is_loopback(host):
        raise UsageError(f"--host {host} opens the server to the network: set {TOKEN} to an"
                         " admin token first (mutating calls will ask for it)")
    settings = load_settings()
    if db:
        settings = settings.with_db(db)
    store = Store(settings.db_url)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = (public_url or f"http://{shown}:{bound}").rstrip("/")
    notes.print(f"conveyor server on {url} (API: {url}/api, OpenAPI: {url}/openapi.json)",
                markup=False)
    app = create_app(store, settings, ServerConfig(token=token, public_url=url))
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror}; choose another"
                         " --port") from None
    sock.listen(2048)
    return sock
