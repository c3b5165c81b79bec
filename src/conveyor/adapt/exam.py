"""Exam files: `{"fixed_text": "..."}` holding many questions, each `질문: ... 정답: ...`.

Scanned text often lost the space before an option number (`고르시오.1. 신용장은`);
it is restored. An answer that is only an option number is expanded with that
option's text, so the model learns the answer and not just its number.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from conveyor.adapt.qa import QAPair, Tally, json_files

SOURCE = "exam"


class ExamMarkers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = "질문:"  # begins each question
    answer: str = "정답:"  # begins its answer
    text_field: str = "fixed_text"  # the key of the JSON object that holds the text


# an option number glued to the previous word: a non-space, non-digit, then `1.` not followed by a digit
_GLUED_OPTION = re.compile(r"(?<=[^\s\d])(?=(?:[1-9]|1\d)\.(?!\d))")
_OPTION_SPLIT = re.compile(r"(?:^|\s)((?:[1-9]|1\d))\.\s*")
_ONLY_NUMBER = re.compile(r"^\s*((?:[1-9]|1\d))\s*\.?\s*(?:번)?\s*$")


def restore_option_spaces(text: str) -> str:
    return _GLUED_OPTION.sub(" ", text)


def options_of(question: str) -> dict[int, str]:
    """The numbered options of a question, when they run 1, 2, 3, ... in order."""
    pieces = _OPTION_SPLIT.split(question)
    numbers = [int(n) for n in pieces[1::2]]
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        return {}
    return {n: text.strip() for n, text in zip(numbers, pieces[2::2], strict=True)}


def _squash(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


def parse_exam_text(text: str, markers: ExamMarkers, file: str, tally: Tally) -> list[QAPair]:
    pairs = []
    for number, block in enumerate(text.split(markers.question)[1:], start=1):
        if markers.answer not in block:
            snippet = _squash(block)[:40]
            tally.skip(file, f"question {number}", f"no {markers.answer!r}; skipped ({snippet}…)")
            continue
        question, answer = block.split(markers.answer, 1)
        question = _squash(restore_option_spaces(question))
        answer = _squash(restore_option_spaces(answer))
        only = _ONLY_NUMBER.match(answer)
        choice = options_of(question).get(int(only.group(1))) if only else None
        if choice:
            answer = f"{only.group(1)}. {choice}"
        pairs.append(QAPair(context="", question=question, answer=answer, source=SOURCE))
    tally.pairs += len(pairs)
    return pairs


def read_exam_folder(folder: Path, markers: ExamMarkers, tally: Tally) -> list[QAPair]:
    pairs: list[QAPair] = []
    for path, data in json_files(folder, tally):
        text = data.get(markers.text_field) if isinstance(data, dict) else None
        if not isinstance(text, str):
            tally.skip(str(path), None,
                       f"expected an object with a {markers.text_field!r} string")
            continue
        found = parse_exam_text(text, markers, str(path), tally)
        if not found and markers.question not in text:
            tally.note(str(path), None, f"no {markers.question!r} marker found in the text")
        pairs += found
    return pairs
