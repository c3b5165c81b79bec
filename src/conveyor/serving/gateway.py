"""The service's one endpoint: auth, request checks, least-outstanding routing, streaming relay.

It sits on the path of every request and every streamed token, so it is written on asyncio
protocols with httptools (the HTTP parser uvicorn uses) instead of a web framework plus an
HTTP client: that pair adds about 0.7 ms a request and tops out near 600 requests/s on two
cores, where this adds tens of microseconds (benchmarks/gateway_overhead.py).

This module decides what happens to a request (answer it here, refuse it, or forward it to a
replica); `client_connection` speaks HTTP with the client and relays the replica's answer byte
for byte; `upstream` holds the connections to the replicas.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from conveyor.serving.auth import TokenVerifier
from conveyor.serving.client_connection import ClientConnection
from conveyor.serving.metrics import CONTENT_TYPE as METRICS_TYPE
from conveyor.serving.metrics import GatewayMetrics
from conveyor.serving.upstream import Upstream

PREFLIGHT_HEADERS = (b"access-control-allow-methods: GET, POST, OPTIONS\r\n"  # with CORS_HEADERS
                     b"access-control-allow-headers: authorization, content-type\r\n"
                     b"access-control-max-age: 600\r\n")


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
