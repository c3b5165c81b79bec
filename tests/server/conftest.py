"""The server's app run for real by uvicorn on a loopback port, in a thread of the test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from conveyor.server.app import ServerConfig, create_app
from conveyor.settings import Settings
from conveyor.store.repository import Store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, store: Store, settings: Settings, token: str | None, background: bool):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(store, settings, ServerConfig(token=token, public_url=self.url,
                                                       background=background))
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
def start_server(store: Store, settings: Settings):
    """Start the app (no cron scheduler or webhooks unless asked); stopped after the test."""
    started: list[RunningServer] = []

    def start(token: str | None = None, background: bool = False) -> RunningServer:
        server = RunningServer(store, settings, token, background).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__()


@pytest.fixture
def api(start_server) -> Iterator[httpx.Client]:
    """An HTTP client of a server started for this test."""
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
