"""The gateway over loopback: a real asyncio upstream, a real client, the gateway between."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from conveyor.serving.auth import TokenVerifier, issue_token
from conveyor.serving.gateway import Gateway, GatewaySettings, check_request
from conveyor.serving.metrics import GatewayMetrics
from conveyor.serving.upstream import Upstream

SECRET = "s" * 32
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class FakeReplica:
    """An upstream whose behaviour each test sets: answer, stream step by step, hang, or die."""

    def __init__(self, name: str):
        self.name = name
        self.mode = "answer"
        self.release = asyncio.Event()  # streams: the next chunk waits for it
        self.seen: list[dict] = []
        self.disconnected = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.seen.append({"head": head, "body": json.loads(await reader.readexactly(length))})
                if self.mode == "hang":
                    await reader.read()
                    return
                if self.mode == "die":
                    writer.close()
                    return
                if self.mode == "stream":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
                    eof = asyncio.ensure_future(reader.read(1))  # the gateway hanging up
                    for i in range(3):
                        released = asyncio.ensure_future(self.release.wait())
                        await asyncio.wait({eof, released}, return_when=asyncio.FIRST_COMPLETED)
                        if eof.done():
                            released.cancel()
                            self.disconnected.set()
                            return
                        self.release.clear()
                        event = b"data: {\"i\": %d}\n\n" % i
                        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    eof.cancel()
                    return
                body = json.dumps({"replica": self.name, "usage": {
                    "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.disconnected.set()


async def start_gateway(*replicas: FakeReplica, public: bool = True, **settings):
    verifier = None if public else TokenVerifier(SECRET, "svc")
    gateway = Gateway(GatewaySettings(service="svc", model="m", verifier=verifier, **settings),
                      GatewayMetrics("svc"))
    for replica in replicas:
        upstream = Upstream("127.0.0.1", await replica.start(), replica.name)
        upstream.accepting = True
        gateway.upstreams.append(upstream)
    server = await gateway.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return gateway, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)


def test_a_request_is_answered_by_the_replica_and_counted():
    async def scenario():
        replica = FakeReplica("a")
        gateway, client = await start_gateway(replica)
        answer = await client.post("/v1/chat/completions", json=CHAT,
                                   headers={"x-trace": "t1", "authorization": "Bearer x"})
        metrics = (await client.get("/metrics")).text
        return answer, replica.seen[0], metrics

    answer, seen, metrics = asyncio.run(scenario())
    assert answer.status_code == 200 and answer.json()["replica"] == "a"
    assert answer.headers["access-control-allow-origin"] == "*"
    assert seen["body"] == CHAT
    head = seen["head"].lower()
    assert b"x-trace: t1" in head and b"authorization" not in head  # the token stays here
    assert 'conveyor_gateway_requests_total{code="2xx",service="svc"} 1.0' in metrics
    assert 'conveyor_gateway_tokens_total{kind="completion",service="svc"} 4.0' in metrics


def test_requests_go_to_the_replica_with_fewest_outstanding_and_never_to_a_closed_one():
    async def scenario():
        busy, idle, down = FakeReplica("busy"), FakeReplica("idle"), FakeReplica("down")
        gateway, client = await start_gateway(busy, idle, down)
        gateway.upstreams[0].outstanding = 5
        gateway.upstreams[2].accepting = False
        names = [(await client.post("/v1/chat/completions", json=CHAT)).json()["replica"]
                 for _ in range(4)]
        for upstream in gateway.upstreams:
            upstream.accepting = False
        none_left = await client.post("/v1/chat/completions", json=CHAT)
        return names, down.seen, none_left

    names, seen_by_down, none_left = asyncio.run(scenario())
    assert names == ["idle"] * 4
    assert seen_by_down == []
    assert none_left.status_code == 503 and "no replica" in none_left.json()["error"]["message"]


def test_streamed_chunks_reach_the_client_one_by_one():
    """The replica sends its next chunk only after the client has read the previous one:
    a gateway that buffered would wait forever here."""
    async def scenario():
        replica = FakeReplica("a")
        replica.mode = "stream"
        _, client = await start_gateway(replica)
        received = []
        async with client.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as r:
            replica.release.set()
            async for line in r.aiter_lines():
                if line:
                    received.append(line)
                    replica.release.set()
        return received

    received = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert received == ['data: {"i": 0}', 'data: {"i": 1}', 'data: {"i": 2}']


def test_a_client_that_leaves_mid_stream_closes_the_replica_connection():
    async def scenario():
        replica = FakeReplica("a")
        replica.mode = "stream"
        gateway, client = await start_gateway(replica)
        async with client.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as r:
            replica.release.set()
            async for line in r.aiter_lines():
                if line:
                    break
        await client.aclose()
        await asyncio.wait_for(replica.disconnected.wait(), 5)
        return gateway.upstreams[0].outstanding

    assert asyncio.run(scenario()) == 0


def test_replica_failures_are_answered_not_hung():
    async def scenario():
        dead, hung = FakeReplica("dead"), FakeReplica("hung")
        dead.mode, hung.mode = "die", "hang"
        gateway, client = await start_gateway(dead, answer_timeout=0.5)
        died = await client.post("/v1/chat/completions", json=CHAT)
        gateway.upstreams[0].port = 1  # nothing listens there
        refused = await client.post("/v1/chat/completions", json=CHAT)
        gateway.upstreams[0] = Upstream("127.0.0.1", await hung.start(), "hung")
        gateway.upstreams[0].accepting = True
        started = time.monotonic()
        timed_out = await client.post("/v1/chat/completions", json=CHAT)
        return died, refused, timed_out, time.monotonic() - started

    died, refused, timed_out, waited = asyncio.run(scenario())
    assert died.status_code == 502 and "dead failed while answering" in died.json()["error"]["message"]
    assert refused.status_code == 502 and "unreachable" in refused.json()["error"]["message"]
    assert timed_out.status_code == 504 and "did not answer within 0.5 s" in timed_out.text
    assert waited < 5


def test_tokens_are_required_unless_public():
    async def scenario():
        replica = FakeReplica("a")
        _, client = await start_gateway(replica, public=False)
        good = issue_token(SECRET, "svc", 60)
        answers = {
            "none": await client.post("/v1/chat/completions", json=CHAT),
            "garbage": await client.get("/v1/models", headers={"authorization": "Bearer abc"}),
            "other service": await client.get("/v1/models", headers={
                "authorization": f"Bearer {issue_token(SECRET, 'other', 60)}"}),
            "other secret": await client.get("/v1/models", headers={
                "authorization": f"Bearer {issue_token('t' * 32, 'svc', 60)}"}),
            "good": await client.get("/v1/models", headers={"authorization": f"Bearer {good}"}),
            "preflight": await client.options("/v1/chat/completions", headers={
                "origin": "http://app", "access-control-request-method": "POST"}),
        }
        return answers

    answers = asyncio.run(scenario())
    for case in ("none", "garbage", "other service", "other secret"):
        assert answers[case].status_code == 401, case
        assert answers[case].json()["error"]["code"] == "invalid_api_key"
    assert "conveyor token svc" in answers["none"].json()["error"]["message"]
    assert answers["good"].json()["data"][0]["id"] == "m"
    assert answers["preflight"].status_code == 204
    assert answers["preflight"].headers.get_list("access-control-allow-origin") == ["*"]
    assert "authorization" in answers["preflight"].headers["access-control-allow-headers"]


def test_a_body_over_the_limit_is_refused():
    async def scenario():
        replica = FakeReplica("a")
        _, client = await start_gateway(replica, max_body=1000)
        big = dict(CHAT, messages=[{"role": "user", "content": "x" * 5000}])
        return await client.post("/v1/chat/completions", json=big), replica.seen

    answer, seen = asyncio.run(scenario())
    assert answer.status_code == 413 and "1000 bytes" in answer.json()["error"]["message"]
    assert seen == []


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"messages": []}).encode(), 400, "model"),
    (json.dumps({"model": "other", "messages": [{"role": "user"}]}).encode(), 404, "model"),
    (json.dumps({"model": "m"}).encode(), 400, "messages"),
    (json.dumps({"model": "m", "messages": ["hi"]}).encode(), 400, "messages"),
    (json.dumps(dict(CHAT, stream="yes")).encode(), 400, "stream"),
    (json.dumps(dict(CHAT, max_tokens=True)).encode(), 400, "max_tokens"),
    (json.dumps(dict(CHAT, temperature="hot")).encode(), 400, "temperature"),
])
def test_bad_requests_are_named(body, status, param):
    problem = check_request(b"/v1/chat/completions", body, "m")
    assert problem is not None and problem[0] == status and problem[2] == param


def test_good_requests_pass_the_checks():
    assert check_request(b"/v1/chat/completions", json.dumps(dict(CHAT, stream=True, max_tokens=5,
                                                                  temperature=0)).encode(), "m") is None
    assert check_request(b"/v1/completions", json.dumps({"model": "m", "prompt": "x"}).encode(),
                         "m") is None
    assert check_request(b"/v1/completions", json.dumps({"model": "m"}).encode(), "m")[2] == "prompt"
