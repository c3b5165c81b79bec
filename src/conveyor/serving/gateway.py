"""The service's one endpoint: auth, request checks, least-outstanding routing, streaming relay.

It sits on the path of every request and every streamed token, so it is written on asyncio
protocols with httptools (the HTTP parser uvicorn uses) instead of a web framework plus an
HTTP client: that pair adds about 0.7 ms a request and tops out near 600 requests/s on two
cores, where this adds tens of microseconds (benchmarks/gateway_overhead.py).

A response is relayed byte for byte as it arrives from the replica; the gateway only parses it
to know where it ends. Requests are read whole (they are small and are checked before they go).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

from conveyor.serving.auth import TokenVerifier
from conveyor.serving.metrics import CONTENT_TYPE as METRICS_TYPE
from conveyor.serving.metrics import GatewayMetrics
from conveyor.serving.upstream import Upstream, UpstreamConnection

log = logging.getLogger(__name__)

JSON_TYPE = b"application/json"
NOT_FORWARDED = frozenset({  # hop-by-hop headers, and those the gateway sets itself
    b"connection", b"keep-alive", b"proxy-authorization", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length", b"authorization", b"expect",
})
CORS_HEADERS = b"access-control-allow-origin: *\r\n"
PREFLIGHT_HEADERS = (CORS_HEADERS + b"access-control-allow-methods: GET, POST, OPTIONS\r\n"
                     b"access-control-allow-headers: authorization, content-type\r\n"
                     b"access-control-max-age: 600\r\n")
USAGE = re.compile(rb'"prompt_tokens":\s*(\d+),\s*"completion_tokens":\s*(\d+)')


@dataclass
class GatewaySettings:
    service: str
    model: str  # the served model name
    verifier: TokenVerifier | None  # None: public
    max_body: int = 8 * 1024 * 1024
    connect_timeout: float = 5.0
    answer_timeout: float = 600.0  # seconds a replica may take before its first byte
    status: Callable[[], str] = field(default=lambda: "HEALTHY")  # the service's status


class Gateway:
    """Routes requests over `upstreams`, the list the service keeps current."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics):
        self.settings = settings
        self.metrics = metrics
        self.upstreams: list[Upstream] = []
        self._turn = 0
        created = int(time.time())
        self.models_body = json.dumps({"object": "list", "data": [
            {"id": settings.model, "object": "model", "created": created, "owned_by": "conveyor"}
        ]}).encode()

    async def serve(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: ClientConnection(self), host, port, backlog=2048,
                                        reuse_address=True)

    def pick(self, avoid: Upstream | None = None) -> Upstream | None:
        """The accepting replica with the fewest outstanding requests; ties take turns."""
        upstreams = self.upstreams
        count = len(upstreams)
        self._turn += 1
        best = None
        for i in range(count):
            upstream = upstreams[(self._turn + i) % count]
            if upstream.accepting and upstream is not avoid and (
                    best is None or upstream.outstanding < best.outstanding):
                best = upstream
        return best

    def handle(self, client: ClientConnection) -> None:
        path = client.url.split(b"?", 1)[0]
        if client.method == b"OPTIONS":
            client.reply(204, b"", extra=PREFLIGHT_HEADERS)
        elif path == b"/health":
            client.reply(200, json.dumps({"status": self.settings.status()}).encode())
        elif path == b"/metrics":
            client.reply(200, self.metrics.render(), METRICS_TYPE)
        elif not path.startswith(b"/v1/"):
            client.reply_error(404, f"no route {path.decode(errors='replace')}; the API is under /v1/")
        elif self.settings.verifier is not None and not self.settings.verifier.allows(client.auth):
            self.metrics.error("unauthorized")
            how = f"`conveyor token {self.settings.service}`"
            message = (f"a bearer token is required: send `Authorization: Bearer TOKEN` (get one"
                       f" with {how})" if client.auth is None else
                       f"the bearer token is invalid or has expired; get a new one with {how}")
            client.reply_error(401, message, code="invalid_api_key")
        elif path == b"/v1/models":
            client.reply(200, self.models_body)
        else:
            body = b"".join(client.body)
            problem = check_request(path, body, self.settings.model) if client.method == b"POST" \
                else None
            if problem:
                self.metrics.error("bad_request")
                client.reply_error(*problem)
            else:
                self.forward(client, body)

    def forward(self, client: ClientConnection, body: bytes, avoid: Upstream | None = None) -> None:
        upstream = self.pick(avoid) or (avoid if avoid and avoid.accepting else None)
        if upstream is None:
            self.metrics.error("no_replica")
            client.reply_error(503, "no replica of this service is healthy at the moment; see"
                               f" `conveyor service {self.settings.service}`",
                               kind="server_error")
            return
        payload = b"%s %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-length: %d\r\n%s\r\n%s" % (
            client.method, client.url, upstream.host.encode(), upstream.port, len(body),
            b"".join(client.headers), body)
        client.begin(upstream, payload, body)
        if upstream.idle:
            connection = upstream.idle.pop()
            connection.reused = True
            client.send_over(connection)
        else:
            asyncio.get_running_loop().create_task(self._connect(client, upstream))

    async def _connect(self, client: ClientConnection, upstream: Upstream) -> None:
        try:
            connection = await upstream.connect(self.settings.connect_timeout)
        except (OSError, asyncio.TimeoutError) as err:
            client.connect_failed(upstream, f"{upstream.label} is unreachable ({err or 'timeout'})")
            return
        client.send_over(connection)


def check_request(path: bytes, body: bytes, model: str) -> tuple[int, str, str | None] | None:
    """What is wrong with an API request, as (status, message, param); None when it can go on.

    Only the shape a runtime cannot be trusted to reject the same way everywhere is checked
    here; the runtime validates the rest in the same error format.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return 400, "the request body is not valid JSON", None
    if not isinstance(payload, dict):
        return 400, "the request body must be a JSON object", None
    name = payload.get("model")
    if not isinstance(name, str) or not name:
        return 400, "model: give the model name (GET /v1/models lists it)", "model"
    if name != model:
        return 404, f"model {name!r} does not exist; this endpoint serves {model!r}", "model"
    if path == b"/v1/chat/completions":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            return 400, "messages: give a non-empty list of {\"role\", \"content\"} objects", \
                "messages"
    elif path == b"/v1/completions" and not isinstance(payload.get("prompt"), (str, list)):
        return 400, "prompt: give the prompt as a string", "prompt"
    for key, kinds, what in (("stream", bool, "true or false"),
                             ("max_tokens", int, "a whole number"),
                             ("temperature", (int, float), "a number"),
                             ("top_p", (int, float), "a number")):
        value = payload.get(key)
        if value is not None and (not isinstance(value, kinds) or
                                  (kinds is not bool and isinstance(value, bool))):
            return 400, f"{key}: must be {what}, not {json.dumps(value)}", key
    return None


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
