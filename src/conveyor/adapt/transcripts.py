"""Transcripts: raw lecture text sent to an LLM in chunks, or Q/A already extracted as JSONL.

A `*.jsonl` line is `{"context": ..., "json_output": "<model output>"}`, the output
holding `{"qa_pairs": [{"question": ..., "answer": ...}]}`. A raw `*.txt` is split
into chunks of about `chunk_chars`, each sent with the extraction prompt; what
comes back is written as the same JSONL under OUT/extracted/, so it can be
reviewed and used as input next time. A `*.txt` beside a `*.jsonl` of the same
name counts as already extracted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from conveyor.adapt.llm_client import ChatClient, ChatError
from conveyor.adapt.qa import QAPair, Tally

SOURCE = "transcripts"

DEFAULT_SYSTEM_PROMPT = (
    "You write question/answer pairs for training a domain expert model. Use only facts"
    " stated in the text you are given. Write in the language of the text. Answer with JSON"
    ' only, exactly of this form: {"qa_pairs": [{"question": "...", "answer": "..."}]}'
)
DEFAULT_USER_PROMPT = (
    "From the lecture transcript below, write up to {max_pairs} question/answer pairs that a"
    " student of this subject should be able to answer. Questions must stand on their own;"
    " answers must be complete sentences, corrected from spoken style.\n\n"
    "Transcript:\n{text}"
)


class ExtractionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_chars: int = Field(default=1500, ge=200)  # characters per chunk sent to the LLM
    max_pairs: int = Field(default=5, ge=1)  # pairs asked for per chunk
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    user_prompt: str = DEFAULT_USER_PROMPT  # placeholders: {text}, {max_pairs}
    temperature: float = 0.2
    max_tokens: int = 2048


@dataclass(frozen=True)
class Failure:
    file: str
    item: str
    reason: str
    output: str

    def as_dict(self) -> dict:
        return {"file": self.file, "item": self.item, "reason": self.reason, "output": self.output}


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Paragraphs packed into chunks of at most `chunk_chars`; long paragraphs split at sentences."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= chunk_chars:
            pieces.append(paragraph)
            continue
        for sentence in re.split(r"(?<=[.!?。])\s+", paragraph):
            while len(sentence) > chunk_chars:
                pieces.append(sentence[:chunk_chars])
                sentence = sentence[chunk_chars:]
            if sentence:
                pieces.append(sentence)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 2 + len(piece) <= chunk_chars:
            chunks[-1] += "\n\n" + piece
        else:
            chunks.append(piece)
    return chunks


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_qa_output(output: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(question, answer) pairs from a model's output, and why items were left out.

    Raises ValueError when the output holds no JSON object with a `qa_pairs` list.
    """
    fenced = _FENCE.search(output)
    text = fenced.group(1) if fenced else output
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the output")
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from None
    items = data.get("qa_pairs") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("no `qa_pairs` list in the JSON")
    pairs, dropped = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "question" not in item or "answer" not in item:
            dropped.append(f"qa_pairs[{i}] has no question and answer")
            continue
        answer = item["answer"]
        if isinstance(answer, list):  # some models answer with a list: take its first item
            answer = answer[0] if answer else ""
        pairs.append((str(item["question"]).strip(), str(answer).strip()))
    return pairs, dropped


def pairs_from_output(
    output: str, context: str, file: str, item: str, tally: Tally, failures: list[Failure]
) -> list[QAPair]:
    try:
        found, dropped = parse_qa_output(output)
    except ValueError as err:
        tally.fail(file, item, str(err))
        failures.append(Failure(file, item, str(err), output))
        return []
    for reason in dropped:
        tally.skip(file, item, reason)
    tally.pairs += len(found)
    return [QAPair(context, q, a, SOURCE) for q, a in found]


def read_extracted(path: Path, tally: Tally, failures: list[Failure]) -> list[QAPair]:
    pairs: list[QAPair] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            tally.skip(str(path), item, f"not valid JSON: {err}")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("json_output"), str):
            tally.skip(str(path), item, "expected an object with a `json_output` string")
            continue
        context = str(record.get("context") or "")
        pairs += pairs_from_output(record["json_output"], context, str(path), item, tally,
                                   failures)
    return pairs


def extract_with_llm(
    texts: list[Path],
    client: ChatClient,
    settings: ExtractionSettings,
    out_dir: Path,
    tally: Tally,
    failures: list[Failure],
    on_progress=None,
) -> list[QAPair]:
    """Send every chunk of every raw transcript; write what came back as OUT/extracted/*.jsonl."""
    jobs: list[tuple[Path, int, str]] = []
    for path in texts:
        for number, chunk in enumerate(chunk_text(path.read_text(encoding="utf-8"),
                                                  settings.chunk_chars), start=1):
            jobs.append((path, number, chunk))
    if on_progress:
        on_progress(total=len(jobs))
    conversations = [
        [{"role": "system", "content": settings.system_prompt},
         {"role": "user", "content": settings.user_prompt.format(text=chunk,
                                                                 max_pairs=settings.max_pairs)}]
        for _, _, chunk in jobs
    ]
    answers = client.chat_all(
        conversations,
        {"temperature": settings.temperature, "max_tokens": settings.max_tokens},
        on_done=(lambda: on_progress(advance=1)) if on_progress else (lambda: None),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs: list[QAPair] = []
    written: dict[Path, list[str]] = {}
    for (path, number, chunk), answer in zip(jobs, answers, strict=True):
        item = f"chunk {number}"
        if isinstance(answer, ChatError):
            tally.fail(str(path), item, f"the LLM request failed: {answer}")
            failures.append(Failure(str(path), item, str(answer), ""))
            continue
        pairs += pairs_from_output(answer, chunk, str(path), item, tally, failures)
        written.setdefault(path, []).append(
            json.dumps({"context": chunk, "json_output": answer}, ensure_ascii=False)
        )
    for path, lines in written.items():
        (out_dir / f"{path.stem}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pairs
