"""The builtin runtime over loopback: `python -m conveyor.serving.builtin` on the tiny model."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHAT = [{"role": "user", "content": "FOB 조건에서 위험은 언제 이전되나요?"}]


def start_server(model: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor.serving.builtin", "--model", str(model),
         "--port", str(port), "--name", "tiny"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def url(tiny_model) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_server(tiny_model, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the server did not become healthy"
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/{path}", json=body, timeout=60)


def stream(url: str, path: str, body: dict) -> list[dict]:
    """The stream's JSON events; the last line must be [DONE]."""
    with httpx.stream("POST", f"{url}/v1/{path}", json={**body, "stream": True},
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_health_and_models(url):
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    models = httpx.get(f"{url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"]


def test_greedy_chat_is_the_same_streamed_one_chunk_per_token(url):
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 10, "temperature": 0}
    answer = post(url, "chat/completions", body).json()
    text, usage = answer["choices"][0]["message"]["content"], answer["usage"]
    assert answer["object"] == "chat.completion" and text
    assert usage["completion_tokens"] == 10 and usage["prompt_tokens"] > 5

    events = stream(url, "chat/completions", {**body, "stream_options": {"include_usage": True}})
    first, *pieces, last, usage_chunk = events
    assert first["choices"][0]["delta"]["role"] == "assistant"
    contents = [p["choices"][0]["delta"]["content"] for p in pieces]
    assert "".join(contents) == text
    assert len(contents) == usage["completion_tokens"]
    assert last["choices"][0]["finish_reason"] == "length"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == usage
    assert len({e["id"] for e in events}) == 1


def test_max_tokens_ends_with_length(url):
    chat = post(url, "chat/completions", {"model": "tiny", "messages": CHAT,
                                          "max_completion_tokens": 5}).json()
    completion = post(url, "completions", {"model": "tiny", "prompt": "Incoterms",
                                           "max_tokens": 5, "temperature": 0}).json()
    for answer in (chat, completion):
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == 5


def test_a_stop_string_cuts_the_completion(url):
    body = {"model": "tiny", "prompt": "CIF means", "max_tokens": 12, "temperature": 0}
    text = post(url, "completions", body).json()["choices"][0]["text"]
    stop = text[2:4]
    expected = text[:text.index(stop)]
    assert expected

    cut = post(url, "completions", {**body, "stop": [stop]}).json()
    assert cut["choices"][0] == {"index": 0, "text": expected, "finish_reason": "stop",
                                 "logprobs": None}
    assert cut["usage"]["completion_tokens"] < 12
    events = stream(url, "completions", {**body, "stop": stop})
    assert "".join(e["choices"][0]["text"] for e in events) == expected
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_concurrent_requests_all_answer(url):
    body = {"model": "tiny", "prompt": "The seller", "max_tokens": 8, "temperature": 0}

    async def ask_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{url}/v1/completions", json=body)
                                          for _ in range(4)))

    texts = {r.json()["choices"][0]["text"] for r in asyncio.run(ask_all())}
    assert texts == {post(url, "completions", body).json()["choices"][0]["text"]}


@pytest.mark.parametrize(("path", "body", "status", "param", "code"), [
    ("chat/completions", {"model": "gpt-4o", "messages": CHAT}, 404, "model", "model_not_found"),
    ("chat/completions", {"model": "tiny", "messages": CHAT, "n": 2}, 400, "n", None),
    ("completions", {"model": "tiny", "prompt": "word " * 600}, 400, "prompt",
     "context_length_exceeded"),
])
def test_bad_requests_get_openai_errors(url, path, body, status, param, code):
    response = post(url, path, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] == code and error["message"]


def test_bad_json_is_a_400_in_openai_shape(url):
    response = httpx.post(f"{url}/v1/chat/completions", content=b'{"model": "tiny",',
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize("folder", ["empty", "no-tokenizer"])
def test_a_folder_it_cannot_serve_is_one_line_and_exit_2(tmp_path, tiny_model, folder):
    model = tmp_path / folder
    model.mkdir()
    if folder == "no-tokenizer":
        for file in tiny_model.iterdir():
            if not file.name.startswith(("tokenizer", "chat_template", "special_tokens")):
                shutil.copy(file, model)
    done = subprocess.run([sys.executable, "-m", "conveyor.serving.builtin", "--model",
                           str(model), "--port", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and str(model) in done.stderr


def test_the_openai_client(url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]

    chat = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6,
                                          temperature=0)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == chat.choices[0].message.content
    assert chat.usage.completion_tokens == 6

    completion = client.completions.create(model="tiny", prompt="Incoterms", max_tokens=3,
                                           temperature=0)
    assert completion.choices[0].text and completion.usage.completion_tokens == 3
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=CHAT)
