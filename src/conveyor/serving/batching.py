"""Dynamic batching: concurrent generation requests gathered into batched `generate` waves.

One worker thread owns the model. It takes the first queued request, gathers those that queued
meanwhile or arrive within `batch_wait_ms` of it (up to `max_batch`), and runs them as one
left-padded batch through `model.generate`. Rows keep their own settings: temperature and
top_p (a logits processor), max_tokens and stop strings (a stopping criterion); each step's
tokens go to the requests' asyncio queues (a streamer).

This is dynamic batching, not continuous batching: rows neither join nor leave a running wave.
A row that is done (eos, stop string, max_tokens, or its client went away) is no longer
decoded, and the wave ends as soon as all its rows are done, but until then the done row
still rides along in every forward pass; requests arriving meanwhile wait for the next wave.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList,
                          StoppingCriteria, StoppingCriteriaList)
from transformers.generation.streamers import BaseStreamer

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(frozen=True)
class Finished:
    """The last event of a row: the whole output, and the part not yet sent as pieces."""

    text: str
    tail: str
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class GenerationError(RuntimeError):
    """The wave that held this request failed."""


class Row:
    """One request inside the batcher. Its events are one `str` piece per generated token
    (empty while text is held back: an incomplete character or a possible stop string's
    start), then a `Finished`. The worker thread writes, the event loop reads."""

    def __init__(self, request: GenerationRequest, tokenizer: Any, eos_ids: set[int],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.arrived = time.monotonic()
        self.cancelled = False
        self.finished = False
        self._tokenizer = tokenizer
        self._eos_ids = eos_ids
        self._loop = loop
        self._events: asyncio.Queue[str | Finished | GenerationError] = asyncio.Queue()
        self._ids: list[int] = []
        self._sent = 0  # characters of the output already sent as pieces

    async def next(self) -> str | Finished:
        """The next event; raises GenerationError if the row's wave failed."""
        event = await self._events.get()
        if isinstance(event, GenerationError):
            raise event
        return event

    async def events(self) -> AsyncIterator[str | Finished]:
        while not isinstance(event := await self.next(), Finished):
            yield event
        yield event

    async def result(self) -> Finished:
        """The whole output, once the row is finished."""
        while not isinstance(event := await self.next(), Finished):
            pass
        return event

    def cancel(self) -> None:
        """The client is gone: stop decoding this row (a no-op once it finished)."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self.finished or self.cancelled

    # the worker thread's side

    def accept(self, token: int) -> None:
        """Take the row's next token; send its text piece, and finish the row if it is done."""
        if self.done:
            return
        if token in self._eos_ids:
            self._finish(self._decode(), "stop", with_piece=False)
            return
        self._ids.append(token)
        text = self._decode()
        cut = _first_stop(text, self.request.stop)
        if cut is not None:
            self._finish(text[:cut], "stop")
        elif len(self._ids) >= self.request.max_tokens:
            self._finish(text, "length")
        else:
            safe = len(text.rstrip("\ufffd"))  # an incomplete UTF-8 sequence decodes as U+FFFD
            safe -= _stop_prefix_length(text[:safe], self.request.stop)
            self._send(text[self._sent:max(safe, self._sent)])
            self._sent = max(safe, self._sent)

    def close(self) -> None:
        """End the row if its wave ended first (a safety net: no client may wait forever)."""
        if not self.done:
            self._finish(self._decode(), "length", with_piece=False)

    def fail(self, error: GenerationError) -> None:
        self.finished = True
        self._send(error)

    def _decode(self) -> str:
        return self._tokenizer.decode(self._ids, skip_special_tokens=True,
                                      clean_up_tokenization_spaces=False)

    def _finish(self, text: str, reason: FinishReason, with_piece: bool = True) -> None:
        self.finished = True
        rest = text[self._sent:]
        if with_piece:  # the finishing token's piece carries the rest
            self._send(rest)
            rest = ""
        self._send(Finished(text, rest, reason, len(self.request.prompt_ids), len(self._ids)))

    def _send(self, event: str | Finished | GenerationError) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled = True


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _stop_prefix_length(text: str, stops: list[str]) -> int:
    """The length of the longest end of `text` that could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest


class DynamicBatcher:
    """Runs generation requests for one model in waves of up to `max_batch` rows.

    Counters: `waves` (generate calls), `rows` (requests generated), `largest_wave` (rows),
    `steps` (decoding steps, each one forward pass over the whole wave).
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 8,
                 batch_wait_ms: float = 10.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000
        config = model.generation_config
        eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        # Rows sample in _RowSampling, so none of the folder's sampling defaults (top_k,
        # repetition_penalty, ...) may apply: keep only its special tokens.
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id)
        self.waves = 0
        self.rows = 0
        self.largest_wave = 0
        self.steps = 0
        self._queue: queue.Queue[Row | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="conveyor-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the running wave; rows still queued are not generated."""
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, request: GenerationRequest) -> Row:
        """Queue a request; call from the event loop, then read `row.events()`."""
        row = Row(request, self.tokenizer, self.eos_ids, asyncio.get_running_loop())
        self._queue.put(row)
        return row

    # the worker thread

    def _work(self) -> None:
        while (wave := self._gather()) is not None:
            wave = [row for row in wave if not row.cancelled]
            if not wave:
                continue
            try:
                self._run(wave)
            except Exception as err:  # one failed wave must not stop the server
                log.exception("generation failed for a wave of %d rows", len(wave))
                for row in wave:
                    if not row.finished:
                        row.fail(GenerationError(f"generation failed: {err}"))

    def _gather(self) -> list[Row] | None:
        """The next wave: the first queued row, those queued behind it, and those arriving
        within `batch_wait` of the first; None once `close` was called."""
        first = self._queue.get()
        if first is None:
            return None
        wave = [first]
        deadline = first.arrived + self.batch_wait
        while len(wave) < self.max_batch:
            try:
                row = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if row is None:
                self._queue.put(None)  # stop after this wave
                break
            wave.append(row)
        return wave

    def _run(self, wave: list[Row]) -> None:
        self.waves += 1
        self.rows += len(wave)
        self.largest_wave = max(self.largest_wave, len(wave))
        requests = [row.request for row in wave]
        width = max(len(r.prompt_ids) for r in requests)
        device = self.model.device
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids
                                  for r in requests], device=device)
        attention_mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids)
                                       for r in requests], device=device)
        seeds = [r.seed for r in requests if r.seed is not None]
        if seeds:
            # One generator serves the whole wave, so a seed makes a row repeatable only when
            # the wave's other rows are the same too (e.g. when it runs alone).
            torch.manual_seed(seeds[0])
        log.debug("wave of %d rows, prompt width %d", len(wave), width)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask,
                max_new_tokens=max(r.max_tokens for r in requests),
                do_sample=True, top_k=0,  # top_k 0: no default top-k on top of _RowSampling
                logits_processor=LogitsProcessorList([_RowSampling(requests, device)]),
                stopping_criteria=StoppingCriteriaList([_RowsDone(wave, width)]),
                streamer=_RowStreamer(wave),
            )
        self.steps += output.shape[1] - width
        for row in wave:
            row.close()


class _RowSampling(LogitsProcessor):
    """Each row's temperature and top_p; temperature 0 keeps only the row's argmax, so that
    sampling picks it for sure."""

    def __init__(self, requests: list[GenerationRequest], device: torch.device) -> None:
        temperature = torch.tensor([r.temperature for r in requests], device=device)
        self.greedy = (temperature == 0)[:, None]
        self.temperature = torch.where(self.greedy[:, 0], 1.0, temperature)[:, None]
        self.top_p = torch.tensor([r.top_p for r in requests], device=device)[:, None]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scaled = scores / self.temperature
        ordered, order = scaled.sort(dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        beyond = probs.cumsum(dim=-1) - probs >= self.top_p  # the mass before it reaches p
        sampled = scaled.masked_fill(beyond.scatter(1, order, beyond), float("-inf"))
        argmax = torch.full_like(scores, float("-inf")).scatter(
            1, scores.argmax(dim=-1, keepdim=True), 0.0)
        return torch.where(self.greedy, argmax, sampled)


class _RowsDone(StoppingCriteria):
    """One flag per row: finished (eos, stop string, or max_tokens, counted here too so that
    the order in which `generate` calls streamer and criterion does not matter) or cancelled."""

    def __init__(self, wave: list[Row], width: int) -> None:
        self.wave = wave
        self.width = width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.width
        return torch.tensor([row.done or generated >= row.request.max_tokens for row in self.wave],
                            dtype=torch.bool, device=input_ids.device)


class _RowStreamer(BaseStreamer):
    """Hands each step's tokens, one per row, to their rows; the prompt comes first: skipped."""

    def __init__(self, wave: list[Row]) -> None:
        self.wave = wave

    def put(self, value: torch.Tensor) -> None:
        if value.dim() == 2:  # the prompt
            return
        for row, token in zip(self.wave, value.tolist(), strict=True):
            row.accept(token)

    def end(self) -> None:
        pass
