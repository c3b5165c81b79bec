"""A minimal OpenAI-compatible upstream that answers at once: the fixed point the gateway
benchmark measures against. Non-streamed requests get a small chat completion; `"stream": true`
gets CHUNKS server-sent events (10 ms apart when the body also has `"pace"`). Raw asyncio + httptools, so that it costs little CPU itself.

    python benchmarks/fast_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

import httptools

CHUNKS = 20
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}).encode()
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(COMPLETION), COMPLETION)
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"transfer-encoding: chunked\r\n\r\n")


def _event(index: int) -> bytes:
    data = b"data: " + json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench",
        "choices": [{"index": 0, "delta": {"content": f"t{index}"}, "finish_reason": None}],
    }).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


EVENTS = [_event(i) for i in range(CHUNKS)]
DONE = b"%x\r\n%s\r\n0\r\n\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(MODELS), MODELS)


class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body = b""

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.body = b""

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        if b'"stream": true' in self.body or b'"stream":true' in self.body:
            pause = 0.01 if b'"pace"' in self.body else 0
            asyncio.get_running_loop().create_task(self._stream(pause))
        elif self.body:
            self.transport.write(ANSWER)
        else:
            self.transport.write(HEALTH)

    async def _stream(self, pause: float):
        self.transport.write(STREAM_HEAD)
        for event in EVENTS:  # one write per chunk, each in its own loop turn
            self.transport.write(event)
            await asyncio.sleep(pause)
        self.transport.write(DONE)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port,
                                                            backlog=2048)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(main(int(sys.argv[1])))
    except ModuleNotFoundError:
        asyncio.run(main(int(sys.argv[1])))
