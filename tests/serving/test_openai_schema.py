"""The OpenAI-compatible spec layer: what clients send is accepted, wrong input is named."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from conveyor.serving.openai_schema import (
    SSE_DONE,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatChoice,
    AssistantMessage,
    ChunkChoice,
    CompletionRequest,
    Delta,
    Usage,
    error_body,
    sse,
    validation_error_body,
)


def test_a_request_as_the_openai_client_sends_it():
    request = ChatCompletionRequest.model_validate({
        "model": "trade-qa", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "신용장"},
                                                  {"type": "text", "text": "이란?"}]}],
        "max_completion_tokens": 32, "stop": "\n\n", "user": "someone", "logprobs": False,
    })
    assert request.messages[1].text == "신용장이란?"
    assert request.token_limit == 32 and request.stop_list == ["\n\n"]
    assert request.stream_options.include_usage


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": "hello"}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_wrong_requests_name_the_field(body, param):
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body)
    error = validation_error_body(caught.value.errors())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}: ")


def test_completion_prompt_forms():
    assert CompletionRequest(model="m", prompt=["한 줄"]).text == "한 줄"
    with pytest.raises(ValidationError, match="give one prompt"):
        CompletionRequest(model="m", prompt=["a", "b"])


def test_responses_and_stream_events():
    done = ChatCompletion(model="m", choices=[ChatChoice(message=AssistantMessage(content="네"),
                                                         finish_reason="stop")],
                          usage=Usage.of(5, 2))
    body = json.loads(done.model_dump_json())
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    chunk = ChatCompletionChunk(id="c1", model="m",
                                choices=[ChunkChoice(delta=Delta(content="네"))])
    event = sse(chunk)
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["choices"][0]["delta"]["content"] == "네"
    assert SSE_DONE == b"data: [DONE]\n\n"
    assert error_body("no such model", "not_found_error", "model", "model_not_found") == {
        "error": {"message": "no such model", "type": "not_found_error", "param": "model",
                  "code": "model_not_found"}}
