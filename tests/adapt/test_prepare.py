"""`adapt prepare` end to end on inputs the test writes: exact counts, files, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from conveyor.adapt.config import load_recipe_config
from conveyor.adapt.prepare import NothingUsable, PrepareConfig, prepare
from conveyor.errors import SpecError

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "domain-qa" / "data"


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    write(tmp_path / "exam" / "one.json", {"fixed_text": (
        "질문: 해상 전용 규칙은?1. EXW2. FOB3. DAP 정답: 2 "
        "질문: 답이 없는 문제1. 가2. 나 "
        "질문: 신용장 통일규칙의 이름은? 정답: UCP 600")})
    write(tmp_path / "exam" / "two.json", {"fixed_text": "질문: 해상 전용 규칙은?1. EXW2. FOB3. DAP 정답: 2"})
    write(tmp_path / "exam" / "broken.json", "not json at all")
    write(tmp_path / "terms" / "a.json", [
        {"kor_term": "환적", "eng_term": "Transshipment", "description": "옮겨 싣기."},
        [{"term": "보세구역", "description": "관세가 유보된 구역."}, {"term": "설명 없음"}],
    ])
    write(tmp_path / "terms" / "b.json", {"not": "a list"})
    write(tmp_path / "transcripts" / "lecture.jsonl", "\n".join([
        json.dumps({"context": "c1", "json_output": json.dumps({"qa_pairs": [
            {"question": "FOB에서 위험은 언제 이전되나요?", "answer": ["본선 적재 시", "x"]},
            {"question": "   ", "answer": "빈 질문"}]}, ensure_ascii=False)}, ensure_ascii=False),
        json.dumps({"context": "c2", "json_output": "no json here"}),
        "{broken line",
    ]))
    write(tmp_path / "transcripts" / "raw.txt", "추출되지 않은 강의 원문입니다.")
    return {"exam": tmp_path / "exam", "terms": tmp_path / "terms",
            "transcripts": tmp_path / "transcripts"}


def run(sources, out: Path, **config) -> dict:
    result = prepare(out, PrepareConfig(**config), sources["exam"], sources["terms"],
                     sources["transcripts"])
    return result.report


def test_counts_are_exact_and_files_are_written(sources, tmp_path):
    out = tmp_path / "out"
    report = run(sources, out, test_size=0.25)
    exam, terms, talks = (report["sources"][k] for k in ("exam", "terms", "transcripts"))
    assert (exam["files"], exam["pairs"], exam["skipped"], exam["duplicates"]) == (3, 3, 2, 1)
    assert (terms["files"], terms["pairs"], terms["skipped"]) == (2, 4, 2)
    assert (talks["files"], talks["pairs"], talks["failed"], talks["skipped"], talks["empty"]) \
        == (1, 2, 1, 2, 1)
    assert report["total"] == 2 + 4 + 1 == 7
    assert (report["duplicates"], report["empty"]) == (1, 1)
    assert report["splits"] == {"train": 5, "test": 2}
    reasons = [p["reason"] for p in talks["problems"]]
    assert any("needs an LLM" in r for r in reasons)
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report

    lines = (out / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 7 and set(rows[0]) == {"context", "question", "answer", "source"}
    assert {"question": "FOB에서 위험은 언제 이전되나요?", "answer": "본선 적재 시",
            "context": "c1", "source": "transcripts"} in rows
    assert "\\u" not in (out / "qa.jsonl").read_text(encoding="utf-8"), "UTF-8, not escaped"

    dataset = load_from_disk(str(out / "dataset"))
    assert set(dataset) == {"train", "test"}
    assert dataset["train"].column_names == ["context", "question", "answer", "source"]
    together = sorted(list(dataset["train"]["question"]) + list(dataset["test"]["question"]))
    assert together == sorted(r["question"] for r in rows)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failures == [{"file": str(sources["transcripts"] / "lecture.jsonl"), "item": "line 2",
                         "reason": "no JSON object in the output", "output": "no json here"}]


def test_split_is_deterministic_for_a_seed(sources, tmp_path):
    run(sources, tmp_path / "a", seed=7, test_size=0.3)
    run(sources, tmp_path / "b", seed=7, test_size=0.3)
    run(sources, tmp_path / "c", seed=8, test_size=0.3)
    tests = [list(load_from_disk(str(tmp_path / name / "dataset"))["test"]["question"])
             for name in "abc"]
    assert tests[0] == tests[1]
    assert tests[0] != tests[2]


def test_no_test_split_when_test_size_is_zero(sources, tmp_path):
    report = run(sources, tmp_path / "out", test_size=0)
    assert report["splits"] == {"train": 7, "test": 0}
    assert list(load_from_disk(str(tmp_path / "out" / "dataset"))) == ["train"]


def test_nothing_usable_is_an_error_with_a_report(tmp_path):
    write(tmp_path / "terms" / "bad.json", [{"term": "설명 없음"}])
    with pytest.raises(NothingUsable, match="no usable"):
        prepare(tmp_path / "out", PrepareConfig(), terms_dir=tmp_path / "terms",
                exam_dir=tmp_path / "missing")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["total"] == 0
    assert report["sources"]["exam"]["problems"] == [
        {"file": str(tmp_path / "missing"), "item": None, "reason": "no such folder"}]


def test_the_sample_data_prepares_cleanly(tmp_path):
    report = prepare(tmp_path / "out", PrepareConfig(), SAMPLE / "exam", SAMPLE / "terms",
                     SAMPLE / "transcripts").report
    exam, terms, talks = (report["sources"][k] for k in ("exam", "terms", "transcripts"))
    # the counts its README states: 13 questions (one lost its answer), 64 terms, 44 pairs
    assert (exam["files"], exam["pairs"], exam["skipped"]) == (2, 12, 1)
    assert terms["skipped"] == 0 and terms["pairs"] == 2 * len(_terms_in(SAMPLE / "terms")) == 128
    assert (talks["files"], talks["pairs"], talks["failed"], talks["skipped"]) == (2, 44, 0, 0)
    assert report["total"] == 184 and report["duplicates"] == 0
    assert report["splits"] == {"train": 166, "test": 18}


def _terms_in(folder: Path) -> list:
    from conveyor.adapt.glossary import flatten

    return [item for f in folder.glob("*.json")
            for _, item in flatten(json.loads(f.read_text(encoding="utf-8")))]


def test_shipped_config_is_the_defaults_and_overrides_work(tmp_path):
    assert load_recipe_config(PrepareConfig, "prepare.yaml") == PrepareConfig()
    tuned = load_recipe_config(PrepareConfig, "prepare.yaml",
                               assignments=["seed=3", "transcripts.chunk_chars=900"])
    assert (tuned.seed, tuned.transcripts.chunk_chars) == (3, 900)
    with pytest.raises(SpecError, match=r"--set transcripts.chunk_chars=5: transcripts.chunk_chars"):
        load_recipe_config(PrepareConfig, "prepare.yaml", assignments=["transcripts.chunk_chars=5"])
    bad = write(tmp_path / "p.yaml", "seed: 1\nexam:\n  questoin: 'Q:'\n")
    with pytest.raises(SpecError, match=r"p.yaml:3: exam.questoin: unknown key; known keys here:"):
        load_recipe_config(PrepareConfig, "prepare.yaml", bad)


def test_cli_prints_problems_and_exits_nonzero_only_when_nothing_usable(cli, sources, tmp_path):
    good = cli("adapt", "prepare", "--exam", sources["exam"], "--terms", sources["terms"],
               "--out", tmp_path / "out")
    assert good.returncode == 0, good.stderr
    assert f"{sources['exam'] / 'broken.json'}: not valid JSON" in good.stderr
    assert "Traceback" not in good.stderr
    empty = cli("adapt", "prepare", "--exam", tmp_path / "nowhere", "--out", tmp_path / "o2")
    assert empty.returncode == 1
    assert "no such folder" in empty.stderr and "no usable" in empty.stderr
    assert "Traceback" not in empty.stderr
    nothing = cli("adapt", "prepare", "--out", tmp_path / "o3")
    assert nothing.returncode == 1 and "give at least one of" in nothing.stderr
