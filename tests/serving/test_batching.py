"""The dynamic batcher in process, on the tiny model: waves, per-row settings, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.serving.batching import DynamicBatcher, Finished, GenerationRequest
from conveyor.serving.builtin import Served, load

PROMPTS = ["The seller", "신용장", "CIF means", "What is a letter of credit under UCP 600?"]


@pytest.fixture(scope="module")
def served(tiny_model) -> Served:
    served = load(tiny_model, "cpu", max_batch=8, batch_wait_ms=200, name="tiny")
    served.batcher.start()
    yield served
    served.batcher.close()


def ask(served: Served, prompt: str, max_tokens: int = 12, **settings) -> GenerationRequest:
    return GenerationRequest(served.tokenizer(prompt)["input_ids"], max_tokens, **settings)


def run(batcher: DynamicBatcher, *requests: GenerationRequest) -> list[Finished]:
    """Submit all requests at once and wait for their results."""

    async def main() -> list[Finished]:
        rows = [batcher.submit(r) for r in requests]
        return list(await asyncio.gather(*(row.result() for row in rows)))

    return asyncio.run(main())


def test_concurrent_requests_run_in_one_wave_with_their_unbatched_greedy_output(served):
    batcher = served.batcher
    alone = [run(batcher, ask(served, p, temperature=0))[0] for p in PROMPTS]
    assert len({a.text for a in alone}) == len(PROMPTS)  # different prompts, different answers
    waves, largest = batcher.waves, batcher.largest_wave

    together = run(batcher, *(ask(served, p, temperature=0) for p in PROMPTS))

    assert batcher.waves == waves + 1 and batcher.largest_wave == max(largest, len(PROMPTS))
    assert [t.text for t in together] == [a.text for a in alone]  # left padding is masked
    assert all(t.reason == "length" and t.completion_tokens == 12 for t in together)


def test_rows_keep_their_own_settings_inside_a_wave(served):
    greedy = run(served.batcher, ask(served, "CIF means", 16, temperature=0))[0]
    mixed = run(served.batcher,
                ask(served, "CIF means", 16, temperature=0),
                ask(served, "CIF means", 16, temperature=2.0, seed=1),
                ask(served, "CIF means", 16, temperature=1.0, top_p=1e-6),  # only the top token
                ask(served, "CIF means", 4, temperature=0))
    assert mixed[0].text == greedy.text
    assert mixed[1].text != greedy.text
    assert mixed[2].text == greedy.text
    assert mixed[3].completion_tokens == 4 and greedy.text.startswith(mixed[3].text)


def test_a_seed_repeats_a_sampled_answer(served):
    first, second = (run(served.batcher, ask(served, "The seller", 16, temperature=1.5,
                                             seed=42))[0] for _ in range(2))
    assert first.text == second.text


def test_stop_strings_cut_the_output_and_are_held_back_while_streaming(served):
    text = run(served.batcher, ask(served, "CIF means", 12, temperature=0))[0].text
    stop = text[2:4]
    expected = text[:text.index(stop)]

    async def stream() -> tuple[list[str], Finished]:
        row = served.batcher.submit(ask(served, "CIF means", 12, temperature=0, stop=[stop]))
        events = [event async for event in row.events()]
        return events[:-1], events[-1]

    pieces, done = asyncio.run(stream())
    assert expected and done.text == expected and done.reason == "stop"
    assert "".join(pieces) + done.tail == expected
    assert len(pieces) == done.completion_tokens  # one piece per token, some held back empty


def test_a_cancelled_row_ends_its_wave_early(served):
    batcher = served.batcher

    async def cancel_after_first_piece() -> None:
        row = batcher.submit(ask(served, "The seller", 400, temperature=0))
        await row.next()
        row.cancel()

    steps = batcher.steps
    asyncio.run(cancel_after_first_piece())
    run(batcher, ask(served, "CIF means", 2, temperature=0))  # the worker is free again
    assert batcher.steps - steps < 100
