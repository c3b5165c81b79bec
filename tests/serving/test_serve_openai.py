"""Done as a new user would: `conveyor serve` on a model folder, then the official openai client."""

from __future__ import annotations

import re

import openai
import pytest

QUESTION = [{"role": "user", "content": "FOB 조건에서 위험은 언제 이전되나요?"}]


@pytest.fixture
def served(cli, tiny_model, free_port, services):
    started = cli("serve", tiny_model, "--name", "tiny", "--port", free_port, "--detach",
                  timeout=300)
    assert started.returncode == 0, started.stderr
    assert "runtime builtin" in started.stdout  # auto: an HF folder without a GPU
    token = re.search(r"Authorization: Bearer (\S+)", started.stdout)[1]
    return f"http://127.0.0.1:{free_port}/v1", token


def test_the_openai_client_gets_models_chat_streams_and_completions(served):
    url, token = served
    client = openai.OpenAI(base_url=url, api_key=token, max_retries=0)

    assert [m.id for m in client.models.list()] == ["tiny"]

    chat = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8,
                                          temperature=0)
    text = chat.choices[0].message.content
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert 0 < chat.usage.completion_tokens <= 8 and chat.usage.prompt_tokens > 5

    pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="tiny", messages=QUESTION, max_tokens=8, temperature=0, stream=True)
        if chunk.choices]
    assert "".join(pieces) == text  # greedy: the same answer, streamed
    assert len([p for p in pieces if p]) > 1

    completion = client.completions.create(model="tiny", prompt="Incoterms", max_tokens=5,
                                           temperature=0)
    assert completion.usage.completion_tokens <= 5 and completion.choices[0].text


def test_the_openai_client_sees_auth_and_model_errors(served):
    url, token = served
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="not-a-token", max_retries=0).models.list()
    client = openai.OpenAI(base_url=url, api_key=token, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert "tiny" in str(missing.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])
