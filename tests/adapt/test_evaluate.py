"""`adapt evaluate` end to end: a tiny local model and a model and a judge behind a real
OpenAI-compatible server on loopback, garbage and out-of-range judge replies included."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from conveyor.adapt.evaluate import EvalConfig, evaluate
from conveyor.adapt.prepare import DatasetError
from conveyor.adapt.judge import RETRY_NUDGE
from conveyor.adapt.llm_client import EndpointUnreachable
from conveyor.adapt.models import ModelError

ROWS = [
    {"question": "FOB에서 위험은 언제 이전되나요?", "answer": "물품이 본선에 적재될 때 이전된다."},
    {"question": "UCP 600은 무엇인가요?", "answer": "화환신용장에 관한 ICC의 통일규칙이다."},
    {"question": "환적이란 무엇인가요?", "answer": "화물을 다른 운송수단으로 옮겨 싣는 것이다."},
    {"question": "HS 코드는 무엇인가요?", "answer": "상품을 분류하는 국제 통일 코드이다."},
]
# what the served "tuned" model answers: right twice, then a reply the judge cannot grade,
# then one it grades out of range, then (after the nudge) in range
SERVED = {ROWS[0]["question"]: ROWS[0]["answer"], ROWS[1]["question"]: ROWS[1]["answer"],
          ROWS[2]["question"]: "GARBAGE", ROWS[3]["question"]: "ONCE 상품 코드"}


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "dataset"
    DatasetDict(train=Dataset.from_list(ROWS), test=Dataset.from_list(ROWS),
                unlabelled=Dataset.from_list([{"question": "q"}])).save_to_disk(str(path))
    return path


def scripted(fake_llm):
    def reply(text: str):
        if text == RETRY_NUDGE:
            original = fake_llm.requests[-1]["messages"][1]["content"]
            return "Now with a tag. <score>2</score>" if "ONCE" in original else "<score>9</score>"
        if text.startswith("Question:"):
            answer = text.split("Answer to grade:\n", 1)[1]
            if "GARBAGE" in answer:
                return "I refuse to grade."
            if "ONCE" in answer:
                return "No tag in this reply."
            reference = text.split("Reference answer:\n", 1)[1].split("\n\nAnswer to grade:")[0]
            return "It agrees. <score>5</score>" if answer == reference else "Wrong. <score>1</score>"
        question = text.split("\n", 1)[1]  # after the instruction line
        return SERVED[question]

    return reply


def config(fake_llm, **extra) -> EvalConfig:
    fast = {"backoff": 0.01, "max_retries": 1}
    return EvalConfig(judge={"url": fake_llm.url, "model": "fake-model", **fast},
                      endpoints=fast, generation={"max_new_tokens": 8}, **extra)


def test_base_vs_tuned_with_a_judge(fake_llm, dataset, tiny_model, tmp_path, conveyor_home):
    fake_llm.reply = scripted(fake_llm)
    out = tmp_path / "eval"
    specs = [f"base={tiny_model}", f"tuned={fake_llm.url}#fake-model"]
    metrics = evaluate(dataset, specs, out, config(fake_llm), conveyor_home)

    base, tuned = metrics["models"]["base"], metrics["models"]["tuned"]
    assert tuned["semscore"]["n"] == 4 and tuned["semscore"]["mean"] > base["semscore"]["mean"]
    scores = [row["models"]["tuned"]["semscore"] for row in metrics["rows"]]
    assert scores[:2] == [pytest.approx(1.0, abs=1e-4)] * 2
    assert tuned["truthfulness"] == {"counts": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 2},
                                     "missing": 1, "mean": 4.0, "low": 1, "high": 2}
    assert [r["models"]["tuned"]["truthfulness"] for r in metrics["rows"]] == [5, 5, None, 2]
    assert base["truthfulness"]["counts"]["1"] + base["truthfulness"]["missing"] == 4
    assert json.loads((out / "metrics.json").read_text()) == metrics
    saved = [json.loads(line) for line in (out / "answers" / "tuned.jsonl").read_text().splitlines()]
    assert [s["answer"] for s in saved] == [SERVED[r["question"]] for r in ROWS]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<img") == 3 and "Most improved" in page and ROWS[0]["answer"] in page
    assert all((out / name).stat().st_size > 1000 for name in
               ("semscore.png", "semscore_distribution.png", "truthfulness.png"))

    asked = len(fake_llm.requests)
    again = evaluate(dataset, specs, out, config(fake_llm), conveyor_home)
    assert again["models"] == metrics["models"]
    assert len(fake_llm.requests) == asked, "answers and judgments are reused, nothing is asked"


def test_without_a_judge_truthfulness_is_not_run(fake_llm, dataset, tmp_path, conveyor_home):
    fake_llm.reply = scripted(fake_llm)
    metrics = evaluate(dataset, [f"tuned={fake_llm.url}"], tmp_path / "eval",
                       EvalConfig(endpoints={"backoff": 0.01}), conveyor_home)
    truth = metrics["models"]["tuned"]["truthfulness"]
    assert truth["status"] == "not run" and "--judge-url" in truth["reason"]
    assert [r["models"]["tuned"]["truthfulness"] for r in metrics["rows"]] == [None] * 4


def test_bad_input_fails_before_generation(fake_llm, dataset, tmp_path, conveyor_home,
                                           dead_llm_url):
    out = tmp_path / "eval"
    with pytest.raises(ModelError, match="no such model folder"):
        evaluate(dataset, ["x=/no/such/model"], out, EvalConfig(), conveyor_home)
    with pytest.raises(EndpointUnreachable, match="cannot reach"):
        evaluate(dataset, [f"x={dead_llm_url}#m"], out,
                 EvalConfig(endpoints={"max_retries": 0}), conveyor_home)
    with pytest.raises(DatasetError, match="no split 'dev'"):
        evaluate(dataset, [f"x={fake_llm.url}"], out, EvalConfig(split="dev"), conveyor_home)
    with pytest.raises(DatasetError, match="has no column"):
        evaluate(dataset, [f"x={fake_llm.url}"], out, EvalConfig(split="unlabelled"),
                 conveyor_home)
    assert fake_llm.requests == [] and not out.exists()


def test_cli_one_line_errors_and_summary(cli, fake_llm, dataset, tmp_path):
    fake_llm.reply = scripted(fake_llm)
    bad = cli("adapt", "evaluate", "--data", dataset, "--model", "nonsense", "--out", tmp_path / "e")
    assert bad.returncode == 2 and "write it as NAME=SOURCE" in bad.stderr
    assert "Traceback" not in bad.stderr
    good = cli("adapt", "evaluate", "--data", dataset, "--model", f"tuned={fake_llm.url}",
               "--out", tmp_path / "e", "--judge-url", fake_llm.url, "--set", "judge.backoff=0.01")
    assert good.returncode == 0, good.stderr
    assert "tuned" in good.stdout and "missing 1" in good.stdout


def test_shipped_config_is_the_defaults():
    from conveyor.adapt.config import load_recipe_config

    assert load_recipe_config(EvalConfig, "eval.yaml") == EvalConfig()
