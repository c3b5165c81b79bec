"""A real OpenAI-compatible HTTP server on loopback, scripted by each test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse



@dataclass
class FakeLLM:
    """Answers chat completions with `reply(user_text) -> str | (status, body)`."""

    reply: Callable[[str], object] = lambda text: '{"qa_pairs": []}'
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> dict:
            return {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            answer = self.reply(body["messages"][-1]["content"])
            if isinstance(answer, tuple):
                status, payload = answer
                return JSONResponse(payload, status_code=status)
            return {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }

        return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_llm():
    llm = FakeLLM()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(llm.app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the fake LLM server did not start"
        time.sleep(0.02)
    llm.url = f"http://127.0.0.1:{port}/v1"
    yield llm
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def dead_llm_url() -> str:
    """An address on loopback where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"
