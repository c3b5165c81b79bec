"""Transcript chunking and the parsing of what an LLM returns."""

from __future__ import annotations

import pytest

from conveyor.adapt.transcripts import chunk_text, parse_qa_output


def test_chunks_pack_paragraphs_and_split_long_ones():
    paragraphs = ["가" * 300, "나" * 300, "다" * 300]
    chunks = chunk_text("\n\n".join(paragraphs), chunk_chars=700)
    assert chunks == ["가" * 300 + "\n\n" + "나" * 300, "다" * 300]
    long = "첫 문장입니다. " * 100
    pieces = chunk_text(long, chunk_chars=200)
    assert all(len(p) <= 200 for p in pieces)
    assert " ".join(pieces).split() == long.split()


def test_parse_plain_fenced_and_list_answers():
    pairs, dropped = parse_qa_output(
        'Sure:\n```json\n{"qa_pairs": [{"question": "Q1", "answer": ["A1", "other"]},'
        ' {"question": "Q2", "answer": "A2"}, {"question": "no answer"}]}\n```'
    )
    assert pairs == [("Q1", "A1"), ("Q2", "A2")]
    assert dropped == ["qa_pairs[2] has no question and answer"]


@pytest.mark.parametrize(("output", "reason"), [
    ("I cannot help with that.", "no JSON object"),
    ('{"qa_pairs": [ {"question": "Q", ', "no JSON object"),
    ('{"qa_pairs": [}', "not valid JSON"),
    ('{"pairs": []}', "no `qa_pairs` list"),
])
def test_outputs_without_pairs_are_errors(output, reason):
    with pytest.raises(ValueError, match=reason):
        parse_qa_output(output)
