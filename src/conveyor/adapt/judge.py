"""LLM-judged truthfulness: a score from 1 to 5 for how far an answer agrees with the reference.

The judge (any OpenAI-compatible chat endpoint, temperature 0) reads a rubric, reasons first,
then ends with `<score>N</score>`. Parsing takes that tag, then a few common fallbacks; a score
outside 1..5 is rejected. A reply that cannot be parsed is asked once more; if it fails again the
item is recorded as missing, never as a score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.adapt.llm_client import ChatClient, ChatError

RUBRIC = """You grade answers to domain questions for factual agreement with a reference answer.

Scores:
5 - fully correct: every fact agrees with the reference and nothing contradicts it.
4 - mostly correct: the key fact agrees; a minor detail is missing or imprecise.
3 - partly correct: some facts agree, but an important part is missing or vague.
2 - mostly wrong: the key fact is missing or wrong, with only a small correct element.
1 - wrong: it contradicts the reference, is off topic, or gives no answer.

Judge meaning, not wording or language; do not reward length. First explain your reasoning
in two or three sentences, then end with the score in exactly this form: <score>N</score>"""

QUESTION = """Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}"""

RETRY_NUDGE = "Your reply had no valid score. End with the score as <score>N</score>, N from 1 to 5."

_TAG = re.compile(r"<score>\s*(-?\d+(?:\.\d+)?)\s*</score>", re.IGNORECASE)
_FALLBACKS = [
    re.compile(r"(?:score|점수)\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*5\b"),
    re.compile(r"(?:^|\n)\s*\**(-?\d+)\**\s*$"),
]


def parse_score(reply: str) -> int | None:
    """The score in a judge's reply, or None if there is none or it is outside 1..5."""
    found = _TAG.findall(reply)
    candidates = found[-1:] if found else []
    if not candidates:
        for pattern in _FALLBACKS:
            matches = pattern.findall(reply)
            if matches:
                candidates = matches[-1:]
                break
    if not candidates:
        return None
    value = float(candidates[0])
    if not value.is_integer() or not 1 <= value <= 5:
        return None
    return int(value)


@dataclass(frozen=True)
class Judgment:
    score: int | None
    reply: str
    error: str | None = None


def judge_all(client: ChatClient, items: list[tuple[str, str, str]],
              on_done=lambda: None) -> list[Judgment]:
    """(question, reference, answer) -> a judgment each; one retry for replies without a score."""
    params = {"temperature": 0, "max_tokens": 512}
    conversations = [_conversation(q, r, a) for q, r, a in items]
    replies = client.chat_all(conversations, params, on_done)
    judgments = [_judgment(reply) for reply in replies]
    retry = [i for i, j in enumerate(judgments) if j.score is None and j.error is None]
    if retry:
        again = client.chat_all(
            [conversations[i] + [{"role": "assistant", "content": judgments[i].reply},
                                 {"role": "user", "content": RETRY_NUDGE}] for i in retry],
            params,
        )
        for i, reply in zip(retry, again, strict=True):
            judgments[i] = _judgment(reply)
    return judgments


def _conversation(question: str, reference: str, answer: str) -> list[dict]:
    return [{"role": "system", "content": RUBRIC},
            {"role": "user", "content": QUESTION.format(question=question, reference=reference,
                                                        answer=answer or "(no answer)")}]


def _judgment(reply: str | ChatError) -> Judgment:
    if isinstance(reply, ChatError):
        return Judgment(None, "", error=str(reply))
    return Judgment(parse_score(reply), reply)


def summarize(scores: list[int | None]) -> dict:
    given = [s for s in scores if s is not None]
    counts = {str(n): given.count(n) for n in range(1, 6)}
    return {
        "counts": counts,
        "missing": len(scores) - len(given),
        "mean": round(sum(given) / len(given), 3) if given else None,
        "low": counts["1"] + counts["2"],
        "high": counts["4"] + counts["5"],
    }
