"""The builtin runtime: an OpenAI-compatible server for a Hugging Face model folder.

    python -m conveyor.serving.builtin --model DIR --port P [--host 127.0.0.1] [--name NAME]
        [--max-batch 8] [--batch-wait-ms 10] [--device cpu|auto|cuda]

The model loads before the server listens, so /health answers 200 as soon as it answers at
all. Concurrent requests are generated together by a DynamicBatcher (batching.py). torch and
transformers are imported only when serving, so that importing this module stays light.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from conveyor.errors import ConveyorError, UsageError
from conveyor.serving.folder import ModelFolderError, inspect_folder
from conveyor.serving.openai_schema import (
    SSE_DONE, AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatMessage, ChunkChoice, Completion, CompletionRequest, Delta,
    ModelCard, ModelList, TextChoice, Usage, error_body, new_id, sse, validation_error_body,
)

if TYPE_CHECKING:
    from conveyor.serving.batching import DynamicBatcher, Finished, GenerationRequest, Row

log = logging.getLogger(__name__)

CHAT_MAX_TOKENS = 256  # when a chat request sets no limit (completions default to 16, as OpenAI)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, kind=kind, param=param, code=code)


@dataclass(frozen=True)
class Served:
    """What the app serves: a name, the tokenizer, the model's context, the batcher."""

    name: str
    tokenizer: Any
    context: int  # tokens of prompt plus completion the model can attend to
    batcher: DynamicBatcher

    def check_model(self, model: str) -> None:
        if model != self.name:
            raise ApiError(404, f"the model `{model}` does not exist; this server serves"
                           f" `{self.name}`", param="model", code="model_not_found")

    def chat_ids(self, messages: list[ChatMessage]) -> list[int]:
        """The chat template's prompt, ready for the model's answer; without a template, the
        messages' texts on separate lines."""
        tokenizer = self.tokenizer
        if not tokenizer.chat_template:
            return tokenizer("\n".join(m.text for m in messages))["input_ids"]
        turns = [{"role": m.role, "content": m.text} for m in messages]
        try:
            text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        except Exception as err:  # the template itself rejects the conversation (jinja raise)
            raise ApiError(400, f"messages: the chat template rejects them: {err}",
                           param="messages") from None
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def request(self, prompt_ids: list[int], limit: int, body: ChatCompletionRequest |
                CompletionRequest, param: str) -> GenerationRequest:
        """A generation request; `limit` is cut to the room the context leaves."""
        from conveyor.serving.batching import GenerationRequest

        if not prompt_ids:
            raise ApiError(400, f"{param}: the prompt is empty", param=param)
        room = self.context - len(prompt_ids)
        if room <= 0:
            raise ApiError(400, f"{param}: the prompt has {len(prompt_ids)} tokens and this"
                           f" model's context is {self.context} tokens; shorten the prompt",
                           param=param, code="context_length_exceeded")
        return GenerationRequest(prompt_ids, min(limit, room), body.temperature, body.top_p,
                                 body.stop_list, body.seed)


def create_app(served: Served) -> FastAPI:
    """The HTTP app over a loaded model; it starts and stops the batcher with its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.batcher.start()
        try:
            yield
        finally:
            served.batcher.close()

    app = FastAPI(title="conveyor builtin runtime", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=served.name)])

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest) -> ChatCompletion | StreamingResponse:
        served.check_model(body.model)
        ask = served.request(served.chat_ids(body.messages), body.token_limit or CHAT_MAX_TOKENS,
                             body, "messages")
        row = served.batcher.submit(ask)
        if body.stream:
            return _stream(row, _chat_chunks(served.name), _include_usage(body))
        done = await _finished(row)
        return ChatCompletion(
            model=served.name, usage=_usage(done),
            choices=[ChatChoice(message=AssistantMessage(content=done.text),
                                finish_reason=done.reason)])

    @app.post("/v1/completions", response_model=None)
    async def complete(body: CompletionRequest) -> Completion | StreamingResponse:
        served.check_model(body.model)
        ask = served.request(served.tokenizer(body.text)["input_ids"], body.max_tokens, body,
                             "prompt")
        row = served.batcher.submit(ask)
        if body.stream:
            return _stream(row, _completion_chunks(served.name), _include_usage(body))
        done = await _finished(row)
        return Completion(model=served.name, usage=_usage(done),
                          choices=[TextChoice(text=done.text, finish_reason=done.reason)])

    return app


# answers


async def _finished(row: Row) -> Finished:
    from conveyor.serving.batching import GenerationError

    try:
        return await row.result()
    except GenerationError as err:
        raise ApiError(500, str(err), kind="server_error") from None
    finally:
        row.cancel()  # this request was cancelled (e.g. the server stops): free its row


def _usage(done: Finished) -> Usage:
    return Usage.of(done.prompt_tokens, done.completion_tokens)


def _include_usage(body: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


@dataclass(frozen=True)
class _Chunks:
    """How one kind of stream shapes its chunks; `piece(None, reason)` is the last one."""

    first: BaseModel | None
    piece: Callable[[str | None, str | None], BaseModel]
    usage: Callable[[Usage], BaseModel]


def _chat_chunks(name: str) -> _Chunks:
    answer_id, created = new_id("chatcmpl"), int(time.time())

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=answer_id, created=created, model=name, choices=choices,
                                   usage=usage)

    return _Chunks(
        first=chunk([ChunkChoice(delta=Delta(role="assistant", content=""))]),
        piece=lambda text, reason: chunk([ChunkChoice(
            delta=Delta() if text is None else Delta(content=text), finish_reason=reason)]),
        usage=lambda usage: chunk([], usage),
    )


def _completion_chunks(name: str) -> _Chunks:
    answer_id, created = new_id("cmpl"), int(time.time())
    return _Chunks(
        first=None,
        piece=lambda text, reason: Completion(id=answer_id, created=created, model=name, choices=[
            TextChoice(text=text or "", finish_reason=reason)]),
        usage=lambda usage: Completion(id=answer_id, created=created, model=name, choices=[],
                                       usage=usage),
    )


def _stream(row: Row, chunks: _Chunks, include_usage: bool) -> StreamingResponse:
    """Server-sent events: one chunk per generated token, the finish chunk, the usage chunk
    if asked, then [DONE]. A client that goes away cancels its row."""

    async def events() -> AsyncIterator[bytes]:
        from conveyor.serving.batching import GenerationError

        try:
            if chunks.first is not None:
                yield sse(chunks.first)
            async for event in row.events():
                if isinstance(event, str):
                    yield sse(chunks.piece(event, None))
                    continue
                if event.tail:
                    yield sse(chunks.piece(event.tail, None))
                yield sse(chunks.piece(None, event.reason))
                if include_usage:
                    yield sse(chunks.usage(_usage(event)))
            yield SSE_DONE
        except GenerationError as err:
            yield sse(error_body(str(err), kind="server_error"))
        finally:
            row.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})


# errors in OpenAI's shape


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if errors and errors[0].get("type") == "json_invalid":
        return JSONResponse(error_body("the request body is not valid JSON"), status_code=400)
    return JSONResponse(validation_error_body(errors), status_code=400)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code,
                        headers=exc.headers)


# loading and the command line


def load(folder: Path, device: str, max_batch: int, batch_wait_ms: float,
         name: str) -> Served:
    """Load the folder's model and tokenizer onto `device` (cpu, auto or cuda)."""
    found = inspect_folder(folder)
    if found.kind != "hf":
        raise ModelFolderError(f"{folder}: the builtin runtime serves Hugging Face folders"
                               f" (config.json and *.safetensors), not {found.kind} folders;"
                               " choose another --runtime")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelFolderError(f"{folder}: no tokenizer (tokenizer.json or"
                               " tokenizer_config.json); save it there with"
                               " tokenizer.save_pretrained")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conveyor.serving.batching import DynamicBatcher

    where, dtype = _device(device, torch)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFolderError(f"{folder}: cannot be loaded: {first}") from None
    model = model.to(where).eval()
    context = model.config.get_text_config().max_position_embeddings
    log.info("loaded %s on %s (%s, context %d tokens)", folder, where, dtype, context)
    return Served(name, tokenizer, context, DynamicBatcher(model, tokenizer, max_batch,
                                                           batch_wait_ms))


def _device(choice: str, torch: Any) -> tuple[str, Any]:
    """The device and dtype: float32 on CPU; bfloat16 (or float16) on CUDA."""
    if choice == "cpu":
        return "cpu", torch.float32
    if not torch.cuda.is_available():
        if choice == "cuda":
            raise UsageError("--device cuda: no CUDA device is visible (see"
                             " CUDA_VISIBLE_DEVICES); use --device cpu or auto")
        return "cpu", torch.float32
    return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conveyor.serving.builtin",
                                     description="Serve a model folder, OpenAI-compatible.")
    parser.add_argument("--model", type=Path, required=True, help="a Hugging Face model folder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", help="the served model name (default: the folder's name)")
    parser.add_argument("--max-batch", type=int, default=8, help="rows in one generate wave")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0,
                        help="how long a wave waits for more requests after its first")
    parser.add_argument("--device", choices=("cpu", "auto", "cuda"), default="cpu",
                        help="auto: CUDA when there is one")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.max_batch < 1 or args.batch_wait_ms < 0:
            raise UsageError("--max-batch must be at least 1 and --batch-wait-ms at least 0")
        name = args.name or args.model.resolve().name
        served = load(args.model, args.device, args.max_batch, args.batch_wait_ms, name)
    except ConveyorError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    import uvicorn

    log.info("serving %s as %s on http://%s:%d", args.model, name, args.host, args.port)
    uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
