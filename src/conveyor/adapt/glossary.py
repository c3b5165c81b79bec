"""Glossary files: lists of terms (nested lists flattened), each giving two Q/A pairs.

A term has `term` or `kor_term`, optional `eng_term`, and `description`:
description -> term ("which term is described by ...?") and term -> description
("what does ... mean?"). The question and answer templates are configurable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from conveyor.adapt.qa import QAPair, Tally, json_files

SOURCE = "terms"


class TermTemplates(BaseModel):
    """Placeholders: {term}, {eng_term}, {term_with_eng} (`term (eng_term)` or `term`), {description}."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description_to_term: str = "다음 설명에 해당하는 용어는 무엇인가요? {description}"
    term_answer: str = "{term_with_eng}"
    term_to_description: str = "'{term_with_eng}'(이)란 무엇을 뜻하나요?"
    description_answer: str = "{description}"


def flatten(items: object, path: str = "") -> Iterator[tuple[str, object]]:
    """(`item [2][0]`, value) for every non-list value, at any depth of nesting."""
    if isinstance(items, list):
        for i, value in enumerate(items):
            yield from flatten(value, f"{path}[{i}]")
    else:
        yield f"item {path}", items


def term_pairs(term: dict, templates: TermTemplates) -> list[QAPair]:
    name = str(term.get("term") or term.get("kor_term")).strip()
    english = str(term.get("eng_term") or "").strip()
    fields = {
        "term": name,
        "eng_term": english,
        "term_with_eng": f"{name} ({english})" if english else name,
        "description": str(term["description"]).strip(),
    }
    return [
        QAPair("", templates.description_to_term.format(**fields),
               templates.term_answer.format(**fields), SOURCE),
        QAPair("", templates.term_to_description.format(**fields),
               templates.description_answer.format(**fields), SOURCE),
    ]


def _why_unusable(item: object) -> str | None:
    if not isinstance(item, dict):
        return f"expected a term object, got {type(item).__name__}"
    if not str(item.get("term") or item.get("kor_term") or "").strip():
        return "no `term` or `kor_term`; each term needs its name"
    if not str(item.get("description") or "").strip():
        return "no `description`; each term needs one"
    return None


def read_terms_folder(folder: Path, templates: TermTemplates, tally: Tally) -> list[QAPair]:
    pairs: list[QAPair] = []
    for path, data in json_files(folder, tally):
        if not isinstance(data, list):
            tally.skip(str(path), None, "expected a list of terms (or a list of lists of terms),"
                                        f" got {type(data).__name__}")
            continue
        for where, item in flatten(data):
            reason = _why_unusable(item)
            if reason:
                tally.skip(str(path), where, reason)
                continue
            made = term_pairs(item, templates)
            tally.pairs += len(made)
            pairs += made
    return pairs
