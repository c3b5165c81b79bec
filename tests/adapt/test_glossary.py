"""Glossary terms: nesting flattened, two pairs per term, bad items named and skipped."""

from __future__ import annotations

import json

from conveyor.adapt.glossary import TermTemplates, flatten, read_terms_folder, term_pairs
from conveyor.adapt.qa import Tally


def test_flatten_any_nesting():
    assert list(flatten([1, [2, [3]], 4])) == [
        ("item [0]", 1), ("item [1][0]", 2), ("item [1][1][0]", 3), ("item [2]", 4)]


def test_two_pairs_per_term_with_and_without_english():
    templates = TermTemplates()
    with_english = term_pairs({"kor_term": "환적", "eng_term": "Transshipment",
                               "description": "화물을 다른 운송수단으로 옮겨 싣는 것."}, templates)
    assert [(p.question, p.answer) for p in with_english] == [
        ("다음 설명에 해당하는 용어는 무엇인가요? 화물을 다른 운송수단으로 옮겨 싣는 것.",
         "환적 (Transshipment)"),
        ("'환적 (Transshipment)'(이)란 무엇을 뜻하나요?", "화물을 다른 운송수단으로 옮겨 싣는 것."),
    ]
    plain = term_pairs({"term": "보세구역", "description": "관세 부과가 유보된 구역."}, templates)
    assert plain[0].answer == "보세구역"


def test_templates_are_configurable():
    templates = TermTemplates(description_to_term="Which term: {description}",
                              term_to_description="Define {term} ({eng_term})")
    pairs = term_pairs({"term": "FOB", "eng_term": "Free On Board", "description": "x"}, templates)
    assert [p.question for p in pairs] == ["Which term: x", "Define FOB (Free On Board)"]


def test_bad_files_and_items_are_named_and_good_items_kept(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([
        {"kor_term": "신용장", "description": "은행의 조건부 지급 확약."},
        [{"term": "환적"}, "just a string", {"description": "이름 없는 용어"}],
    ], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "b.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "c.json").write_text('{"term": "wrong shape"}', encoding="utf-8")
    tally = Tally()
    pairs = read_terms_folder(tmp_path, TermTemplates(), tally)
    assert len(pairs) == 2 and tally.pairs == 2 and tally.files == 3
    lines = [p.line() for p in tally.problems]
    assert lines[0] == f"{tmp_path / 'a.json'}: item [1][0]: no `description`; each term needs one"
    assert lines[1] == f"{tmp_path / 'a.json'}: item [1][1]: expected a term object, got str"
    assert lines[2] == (f"{tmp_path / 'a.json'}: item [1][2]: no `term` or `kor_term`;"
                        " each term needs its name")
    assert lines[3].startswith(f"{tmp_path / 'b.json'}: not valid JSON")
    assert lines[4].startswith(f"{tmp_path / 'c.json'}: expected a list of terms")
    assert tally.skipped == 5
