"""A client for any OpenAI-compatible chat endpoint: bounded concurrency, retries, a disk cache.

Used where the recipe asks an LLM for something (Q/A extraction, judging).
Retries with exponential backoff on connection errors, timeouts, 429 and 5xx;
when the endpoint cannot be reached at all, `EndpointUnreachable` stops the
caller with one clear line. Successful answers are cached by request, so a
rerun never asks the same thing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import ConveyorError

log = logging.getLogger(__name__)


class EndpointUnreachable(ConveyorError):
    """Nothing answers at the endpoint's address."""


class ChatError(Exception):
    """One request failed for good (a 4xx, or 5xx after every retry); others may still succeed."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # e.g. http://127.0.0.1:8000/v1 (the part before /chat/completions)
    model: str | None = None  # None: the endpoint's only model, from /models
    api_key: str | None = None
    timeout: float = 120.0
    max_retries: int = 4
    concurrency: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time, at most 30

    @classmethod
    def from_options(cls, url: str, model: str | None, key_env: str | None, **knobs) -> Endpoint:
        key = os.environ.get(key_env) if key_env else None
        return cls(base_url=url.rstrip("/"), model=model, api_key=key or None, **knobs)


class EndpointSettings(BaseModel):
    """An endpoint as recipe configs write it (the `llm:` and `judge:` sections)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    model: str | None = None
    key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = Field(default=4, ge=1)
    max_retries: int = Field(default=4, ge=0)
    backoff: float = Field(default=1.0, ge=0)
    timeout: float = Field(default=120, gt=0)

    def endpoint(self, url: str | None = None, model: str | None = None) -> Endpoint:
        """This endpoint, or another URL and model asked with the same settings."""
        return Endpoint.from_options(
            url or self.url, model or self.model, self.key_env, timeout=self.timeout,
            max_retries=self.max_retries, concurrency=self.concurrency, backoff=self.backoff,
        )


class ChatClient:
    def __init__(self, endpoint: Endpoint, cache_dir: Path | None = None):
        self.endpoint = endpoint
        self.cache_dir = cache_dir
        self.asked = 0  # requests that went over the network (cache misses)
        if cache_dir:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def check(self) -> str:
        """The model name to use, asking /models when none was given; raises
        EndpointUnreachable when nothing answers, before any real work starts."""
        return asyncio.run(self._check())

    async def _check(self) -> str:
        async with httpx.AsyncClient(timeout=self.endpoint.timeout, headers=self._headers()) as http:
            if self.endpoint.model:
                await self._send(http, "GET", "/models", None)
                return self.endpoint.model
            return await self._only_model(http)

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.endpoint.api_key}"} if self.endpoint.api_key else {}

    def chat_all(
        self,
        conversations: list[list[dict]],
        params: dict,
        on_done: Callable[[], None] = lambda: None,
    ) -> list[str | ChatError]:
        """Answers for every conversation, in order; a failed one is its ChatError."""
        return asyncio.run(self._chat_all(conversations, params, on_done))

    async def _chat_all(self, conversations, params, on_done) -> list[str | ChatError]:
        gate = asyncio.Semaphore(self.endpoint.concurrency)
        async with httpx.AsyncClient(timeout=self.endpoint.timeout, headers=self._headers()) as http:
            model = self.endpoint.model or await self._only_model(http)

            async def one(messages: list[dict]) -> str | ChatError:
                async with gate:
                    try:
                        return await self._chat(http, model, messages, params)
                    except ChatError as err:
                        return err
                    finally:
                        on_done()

            return await asyncio.gather(*(one(c) for c in conversations))

    async def _only_model(self, http: httpx.AsyncClient) -> str:
        response = await self._send(http, "GET", "/models", None)
        ids = [m.get("id") for m in response.json().get("data", [])]
        if len(ids) != 1:
            raise ConveyorError(
                f"{self.endpoint.base_url} serves {len(ids)} models ({', '.join(map(str, ids))});"
                " name the one to use"
            )
        return ids[0]

    async def _chat(self, http, model: str, messages: list[dict], params: dict) -> str:
        body = {"model": model, "messages": messages, **params}
        cached = self._cache_path(body)
        if cached and cached.exists():
            return json.loads(cached.read_text(encoding="utf-8"))["content"]
        response = await self._send(http, "POST", "/chat/completions", body)
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ChatError(f"the endpoint's answer is not a chat completion: {err}") from None
        if cached:
            cached.write_text(json.dumps({"request": body, "content": content},
                                         ensure_ascii=False), encoding="utf-8")
        return content

    async def _send(self, http, method: str, path: str, body: dict | None) -> httpx.Response:
        url = self.endpoint.base_url + path
        delay = self.endpoint.backoff
        for attempt in range(self.endpoint.max_retries + 1):
            last = attempt == self.endpoint.max_retries
            try:
                self.asked += path != "/models"
                response = await http.request(method, url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                if last:
                    raise EndpointUnreachable(
                        f"cannot reach the LLM endpoint {self.endpoint.base_url}: {err or 'refused'};"
                        " check the URL and that the server runs"
                    ) from None
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as err:
                if last:
                    raise ChatError(f"no answer after {attempt + 1} tries: {err!r}") from None
            else:
                if response.status_code < 400:
                    return response
                retryable = response.status_code == 429 or response.status_code >= 500
                if not retryable or last:
                    raise ChatError(f"HTTP {response.status_code}: {response.text[:300]}")
                delay = max(delay, _retry_after(response))
            log.info("retrying %s in %.1fs (try %d)", url, delay, attempt + 2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _cache_path(self, body: dict) -> Path | None:
        if not self.cache_dir:
            return None
        key = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode())
        return self.cache_dir / f"{key.hexdigest()}.json"


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", 0)), 60.0)
    except ValueError:
        return 0.0
