"""Parsing a judge's reply: the score tag first, then fallbacks; out-of-range is no score."""

from __future__ import annotations

import pytest

from conveyor.adapt.judge import parse_score, summarize


@pytest.mark.parametrize(("reply", "score"), [
    ("The answer matches the reference. <score>5</score>", 5),
    ("Reasoning... <SCORE> 2 </SCORE>", 2),
    ("<score>3</score> on reflection, the final grade: <score>4</score>", 4),
    ("Mostly right.\nScore: 4", 4),
    ("근거가 부족하다. 점수: 2", 2),
    ("I would give it 3/5.", 3),
    ("Wrong unit.\n**1**", 1),
    ("<score>7</score>", None),
    ("<score>0</score>", None),
    ("<score>3.5</score>", None),
    ("I cannot grade this.", None),
    ("", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_summary_counts_missing_and_bands():
    summary = summarize([5, 4, 1, None, 2, 5])
    assert summary == {"counts": {"1": 1, "2": 1, "3": 0, "4": 1, "5": 2}, "missing": 1,
                       "mean": 3.4, "low": 2, "high": 3}
