"""One client's keep-alive connection to the gateway, and its exchange with a replica.

It parses requests with httptools, hands each whole request to the `Gateway`, relays the
replica's answer byte for byte as it arrives (adding only a CORS header after the status line),
and ends the replica connection when the client leaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from conveyor.serving.upstream import Upstream, UpstreamConnection

if TYPE_CHECKING:
    from conveyor.serving.gateway import Gateway

log = logging.getLogger(__name__)

JSON_TYPE = b"application/json"
NOT_FORWARDED = frozenset({  # hop-by-hop headers, and those the gateway sets itself
    b"connection", b"keep-alive", b"proxy-authorization", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length", b"authorization", b"expect",
})
CORS_HEADERS = b"access-control-allow-origin: *\r\n"
USAGE = re.compile(rb'"prompt_tokens":\s*(\d+),\s*"completion_tokens":\s*(\d+)')


class ClientConnection(asyncio.Protocol):
    """One client's keep-alive connection; it carries one request at a time."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        # Reading goes on while a request is answered, so that a client who leaves is noticed
        # at once; what it sends meanwhile waits here until the answer is out.
        self.busy = False
        self.pending = bytearray()
        self.overflow = False  # a second request came in the same read: close after this one
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.method = b""
        self.auth: bytes | None = None
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.size = 0
        self.rejected = False  # answered early (too big); the rest of the request is ignored
        self.keep_alive = False
        # the exchange with a replica
        self.upstream: Upstream | None = None
        self.connection: UpstreamConnection | None = None
        self.payload = b""
        self.request_body = b""
        self.tries = 0  # replicas tried for this request
        self.started = 0.0
        self.status = 0
        self.streaming = False
        self.head_sent = False
        self.tokens = 0
        self.last = b""
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.busy:
            self.pending += data
            if len(self.pending) > self.gateway.settings.max_body + 65536:
                self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reply_error(400, "protocol upgrades are not supported", close=True)
        except httptools.HttpParserError as err:
            if not self.rejected:
                self.reply_error(400, f"malformed HTTP request: {err}", close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.upstream is not None:  # the client left mid-answer: stop the replica's work
            connection = self.connection
            self._end_exchange()
            if connection is not None:
                connection.detach()

    def pause_writing(self) -> None:  # the client reads slower than the replica writes
        if self.connection is not None:
            self.connection.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.connection is not None:
            self.connection.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.busy:
            self.overflow = True
        else:
            self._reset()

    def on_url(self, url: bytes) -> None:
        if not self.busy:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.busy:
            return
        lower = name.lower()
        if lower == b"authorization":
            self.auth = value
        elif lower == b"content-length":
            if value.isdigit() and int(value) > self.gateway.settings.max_body:
                self._too_big()
        elif lower == b"expect":
            if value.lower() == b"100-continue" and not self.rejected:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        elif lower not in NOT_FORWARDED:
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        if not self.busy:
            self.keep_alive = self.parser.should_keep_alive()  # known here, not once it is over

    def on_body(self, body: bytes) -> None:
        if self.rejected or self.busy:
            return
        self.size += len(body)
        if self.size > self.gateway.settings.max_body:
            self._too_big()
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.rejected or self.busy:
            return
        self.method = self.parser.get_method()
        self.busy = True
        self.started = time.perf_counter()
        self.gateway.handle(self)

    def _too_big(self) -> None:
        self.gateway.metrics.error("too_large")
        limit = self.gateway.settings.max_body
        self.reply_error(413, f"the request body is larger than the limit of {limit} bytes",
                         close=True)
        self.rejected = True

    # answers from the gateway itself

    def reply(self, status: int, body: bytes, content_type: bytes = JSON_TYPE, extra: bytes = b"",
              close: bool = False) -> None:
        if self.closed:
            return
        keep = not close and self.keep_alive
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s%s"
                             b"\r\n%s" % (status, HTTPStatus(status).phrase.encode(), content_type,
                                          len(body), CORS_HEADERS, extra,
                                          b"" if keep else b"connection: close\r\n", body))
        self.gateway.metrics.answered(status, time.perf_counter() - self.started)
        self._next(keep)

    def reply_error(self, status: int, message: str, param: str | None = None,
                    kind: str = "invalid_request_error", code: str | None = None,
                    close: bool = False) -> None:
        if code is None:
            code = {401: "invalid_api_key", 404: "model_not_found" if param == "model" else
                    "not_found", 413: "request_too_large"}.get(status)
        body = json.dumps({"error": {"message": message, "type": kind, "param": param,
                                     "code": code}}).encode()
        self.reply(status, body, close=close)

    def _next(self, keep_alive: bool) -> None:
        self.busy = False
        if not keep_alive or self.overflow or self.closed:
            self.transport.close()
        elif self.pending:  # later, not from inside the parser's callback that got us here
            asyncio.get_running_loop().call_soon(self._read_pending)

    def _read_pending(self) -> None:
        data, self.pending = bytes(self.pending), bytearray()
        if data and not self.closed:
            self.data_received(data)

    # the exchange with a replica

    def begin(self, upstream: Upstream, payload: bytes, body: bytes) -> None:
        self.upstream = upstream
        self.payload = payload
        self.request_body = body
        self.tries += 1
        upstream.outstanding += 1
        self.gateway.metrics.in_flight.inc()

    def send_over(self, connection: UpstreamConnection) -> None:
        if self.closed:  # the client left while the connection was being opened
            connection.upstream.idle.append(connection)
            return
        self.connection = connection
        self.timer = asyncio.get_running_loop().call_later(
            self.gateway.settings.answer_timeout, self._answer_timed_out)
        connection.send(self, self.payload)

    def connect_failed(self, upstream: Upstream, reason: str) -> None:
        if self.closed:
            return
        self._end_exchange()
        self.gateway.metrics.error("unreachable")
        log.warning("%s", reason)
        if self.tries < 2 and self.gateway.pick(avoid=upstream) is not None:
            self.gateway.forward(self, self.request_body, avoid=upstream)
        else:
            self.reply_error(502, f"the model server did not answer: {reason}", kind="server_error")

    def response_headers(self, status: int, streaming: bool) -> None:
        self.status = status
        self.streaming = streaming

    def relay(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.head_sent:
            # the status line, then our CORS header, then the replica's own headers and body
            end = data.find(b"\r\n") + 2
            data = data[:end] + CORS_HEADERS + data[end:]
            self.head_sent = True
        if self.streaming:
            self.tokens += data.count(b"\ndata: {")
        self.last = data
        self.transport.write(data)

    def response_done(self, connection: UpstreamConnection, keep_alive: bool) -> None:
        upstream = self.upstream
        self._end_exchange()
        metrics = self.gateway.metrics
        usage = USAGE.search(self.last) if self.last else None
        if usage:
            metrics.prompt_tokens.inc(int(usage[1]))
            metrics.completion_tokens.inc(int(usage[2]))
        elif self.tokens:
            metrics.completion_tokens.inc(self.tokens)
        metrics.answered(self.status, time.perf_counter() - self.started)
        if keep_alive and upstream.accepting:
            connection.reused = False
            upstream.idle.append(connection)
        else:
            connection.transport.close()
        self._next(keep_alive and self.keep_alive)

    def upstream_lost(self, connection: UpstreamConnection, reason: str) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        if connection.reused and not connection.answered:
            # the replica closed a kept-alive connection as we reused it: nothing was done yet
            self._end_exchange()
            self.gateway.forward(self, self.request_body)
            return
        self._end_exchange()
        self.gateway.metrics.error("replica_failed")
        if self.head_sent:  # part of the answer is out: ending the connection tells the client
            self.transport.close()
        else:
            self.reply_error(502, f"{upstream.label} failed while answering: {reason}",
                             kind="server_error")

    def _answer_timed_out(self) -> None:
        self.timer = None
        connection = self.connection
        label = self.upstream.label if self.upstream else "the replica"
        self._end_exchange()
        if connection is not None:
            connection.detach()
        self.gateway.metrics.error("timeout")
        self.reply_error(504, f"{label} did not answer within"
                         f" {self.gateway.settings.answer_timeout:g} s", kind="server_error")

    def _end_exchange(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.upstream is not None:
            self.upstream.outstanding -= 1
            self.gateway.metrics.in_flight.dec()
        self.upstream = None
        self.connection = None
