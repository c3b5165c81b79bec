"""Exam text: questions split on the markers, option spaces restored, bare answers expanded."""

from __future__ import annotations

from conveyor.adapt.exam import ExamMarkers, options_of, parse_exam_text, restore_option_spaces
from conveyor.adapt.qa import Tally


def test_restores_the_space_lost_before_option_numbers():
    assert restore_option_spaces("고르시오.1. 신용장은2. 환어음은") == "고르시오. 1. 신용장은 2. 환어음은"
    assert restore_option_spaces("세율은 3.5%이다") == "세율은 3.5%이다", "a decimal is not an option"
    assert restore_option_spaces("제21. 조") == "제21. 조", "a two-digit number is not split"


def test_options_must_count_from_one():
    assert options_of("고르시오. 1. 가 2. 나 3. 다") == {1: "가", 2: "나", 3: "다"}
    assert options_of("2. 나 3. 다") == {}


def test_questions_answers_and_skips():
    text = (
        "머리말 질문: 인코텀즈에서 해상 전용 규칙을 고르시오.1. EXW2. FOB3. DAP4. CPT 정답: 2 "
        "질문: 선하증권의 기능을 쓰시오. 정답: 권리증권, 운송계약의 증거, 화물수령증 "
        "질문: 답이 지워진 문제입니다.1. 가 2. 나 "
        "질문: 다음 중 옳은 것은?1. 가2. 나 정답: 1. 가 — 설명이 붙은 답"
    )
    tally = Tally()
    pairs = parse_exam_text(text, ExamMarkers(), "exam.json", tally)
    assert [(p.question, p.answer) for p in pairs] == [
        ("인코텀즈에서 해상 전용 규칙을 고르시오. 1. EXW 2. FOB 3. DAP 4. CPT", "2. FOB"),
        ("선하증권의 기능을 쓰시오.", "권리증권, 운송계약의 증거, 화물수령증"),
        ("다음 중 옳은 것은? 1. 가 2. 나", "1. 가 — 설명이 붙은 답"),
    ]
    assert {p.source for p in pairs} == {"exam"} and {p.context for p in pairs} == {""}
    assert (tally.pairs, tally.skipped) == (3, 1)
    assert tally.problems[0].line().startswith("exam.json: question 3: no '정답:'; skipped")


def test_markers_are_configurable():
    markers = ExamMarkers(question="Q:", answer="A:")
    tally = Tally()
    pairs = parse_exam_text("Q: Which rule? 1. FOB 2. EXW A: 1 Q: Who pays? A: The buyer",
                            markers, "en.json", tally)
    assert [(p.question, p.answer) for p in pairs] == [
        ("Which rule? 1. FOB 2. EXW", "1. FOB"), ("Who pays?", "The buyer")]
