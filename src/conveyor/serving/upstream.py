"""The gateway's side of a replica: where it listens, whether it takes traffic, and the kept-alive
connections to it over which responses are relayed byte for byte.

A connection carries one exchange at a time. The response parser only finds where a response
ends; the bytes themselves go to the client as they arrive, so a stream is never buffered.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools


class Exchange(Protocol):
    """What a connection reports to: the client request it is answering."""

    def relay(self, data: bytes) -> None: ...

    def response_headers(self, status: int, streaming: bool) -> None: ...

    def response_done(self, connection: UpstreamConnection, keep_alive: bool) -> None: ...

    def upstream_lost(self, connection: UpstreamConnection, reason: str) -> None: ...


class Upstream:
    """One replica as the gateway routes to it."""

    def __init__(self, host: str, port: int, label: str):
        self.host = host
        self.port = port
        self.label = label
        self.accepting = False  # set by the service from the replica's health
        self.outstanding = 0  # requests sent and not yet answered in full
        self.idle: list[UpstreamConnection] = []

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port), timeout)
        return connection

    def close_idle(self) -> None:
        for connection in self.idle:
            connection.transport.close()
        self.idle.clear()

    def __repr__(self) -> str:
        return f"Upstream({self.label} at {self.host}:{self.port})"


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.reused = False  # taken from the idle list: the replica may have closed it meanwhile
        self.answered = False  # response bytes arrived for the current exchange
        self._parser = httptools.HttpResponseParser(self)
        self._streaming = False
        self._keep_alive = False
        self._complete = False

    def send(self, exchange: Exchange, payload: bytes) -> None:
        self.exchange = exchange
        self.answered = False
        self._streaming = False
        self.transport.write(payload)

    def detach(self) -> None:
        """The client went away: drop the exchange and the connection with it."""
        self.exchange = None
        self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # nothing was asked: not a response we can place
            self.transport.close()
            return
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self.exchange = None
            self.transport.close()
            exchange.upstream_lost(self, f"malformed response: {err}")
            return
        exchange.relay(data)
        if self._complete:
            self._complete = False
            self.exchange = None
            exchange.response_done(self, self._keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.upstream.idle:
            self.upstream.idle.remove(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.upstream_lost(self, str(exc) if exc else "the replica closed the connection")

    def pause_writing(self) -> None:  # our writes to the replica back up: nothing to do, bodies are small
        pass

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type" and b"event-stream" in value:
            self._streaming = True

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()  # known here, not once it is over
        self.exchange.response_headers(self._parser.get_status_code(), self._streaming)

    def on_message_complete(self) -> None:
        self._complete = True
