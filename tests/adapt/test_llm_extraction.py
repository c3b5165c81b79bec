"""Raw transcripts through a real OpenAI-compatible server on loopback: extraction, failures,
retries, caching, and an endpoint that is not there."""

from __future__ import annotations

import json

import pytest

from conveyor.adapt.llm_client import ChatClient, Endpoint, EndpointSettings, EndpointUnreachable
from conveyor.adapt.prepare import PrepareConfig, prepare


def pairs_for(text: str) -> str:
    """What the fake model answers: one pair per paragraph of the chunk it was sent."""
    chunk = text.split("Transcript:\n", 1)[1]
    if "GARBAGE" in chunk:
        return "Sorry, I can only answer in prose."
    pairs = [{"question": f"{p.split()[0]} 문단의 요점은?", "answer": p}
             for p in chunk.split("\n\n")]
    body = json.dumps({"qa_pairs": pairs}, ensure_ascii=False)
    return f"```json\n{body}\n```" if "FENCE" in chunk else body


def config(llm, **llm_knobs) -> PrepareConfig:
    knobs = {"backoff": 0.01, "max_retries": 3, **llm_knobs}
    return PrepareConfig(llm=EndpointSettings(url=llm.url, model="fake-model", **knobs),
                         transcripts={"chunk_chars": 200})


def test_raw_transcripts_are_extracted_failures_kept_and_reruns_cached(fake_llm, tmp_path):
    fake_llm.reply = pairs_for
    talks = tmp_path / "talks"
    talks.mkdir()
    paragraphs = [f"단락{i} " + " ".join(["신용장은 은행의 지급 확약이다."] * 4) for i in range(4)]
    (talks / "lc.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    (talks / "bad.txt").write_text("GARBAGE 강의 원문", encoding="utf-8")
    (talks / "fenced.txt").write_text("FENCE 짧은 강의입니다.", encoding="utf-8")
    out = tmp_path / "out"

    report = prepare(out, config(fake_llm), transcripts_dir=talks).report

    talk = report["sources"]["transcripts"]
    assert talk["files"] == 3
    assert len(fake_llm.requests) == 2 + 1 + 1, "lc.txt is two chunks of two paragraphs"
    assert (talk["pairs"], talk["failed"]) == (4 + 1, 1)
    assert report["total"] == 5 and report["llm_requests"] == 4
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["file"], f["item"], f["reason"]) for f in failures] == [
        (str(talks / "bad.txt"), "chunk 1", "no JSON object in the output")]
    assert failures[0]["output"] == "Sorry, I can only answer in prose."
    extracted = (out / "extracted" / "lc.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(extracted[0])
    assert first["context"] == "\n\n".join(paragraphs[:2])
    assert json.loads(first["json_output"])["qa_pairs"][0]["answer"] == paragraphs[0]
    rows = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    assert [r["context"] for r in rows] == ["FENCE 짧은 강의입니다."] + [first["context"]] * 2 \
        + ["\n\n".join(paragraphs[2:])] * 2, "fenced.txt, then lc.txt's two chunks (bad.txt failed)"
    request = fake_llm.requests[0]
    assert request["model"] == "fake-model" and request["temperature"] == 0.2
    assert request["messages"][0]["role"] == "system"

    again = prepare(out, config(fake_llm), transcripts_dir=talks).report
    assert len(fake_llm.requests) == 4, "a rerun asks nothing again"
    assert again["total"] == 5 and again["llm_requests"] == 0


def test_server_errors_are_retried_and_a_4xx_is_a_failure(fake_llm, tmp_path):
    calls = {"n": 0}

    def flaky(text: str):
        calls["n"] += 1
        if "NOPE" in text:
            return 400, {"error": {"message": "bad request"}}
        if calls["n"] <= 2:
            return 503, {"error": {"message": "warming up"}}
        return pairs_for(text)

    fake_llm.reply = flaky
    talks = tmp_path / "talks"
    talks.mkdir()
    (talks / "a.txt").write_text("재시도 끝에 성공하는 강의.", encoding="utf-8")
    report = prepare(tmp_path / "out", config(fake_llm, concurrency=1),
                     transcripts_dir=talks).report
    assert report["total"] == 1 and calls["n"] == 3
    (talks / "b.txt").write_text("NOPE 거절되는 강의.", encoding="utf-8")
    report = prepare(tmp_path / "out", config(fake_llm), transcripts_dir=talks).report
    talk = report["sources"]["transcripts"]
    assert talk["failed"] == 1
    assert "HTTP 400" in talk["problems"][0]["reason"]


def test_api_key_and_model_discovery(fake_llm, tmp_path, monkeypatch):
    fake_llm.reply = pairs_for
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-123")
    client = ChatClient(Endpoint.from_options(fake_llm.url, None, "TEST_LLM_KEY", backoff=0.01))
    [answer] = client.chat_all([[{"role": "user", "content": "Transcript:\n가 나"}]], {})
    assert json.loads(answer)["qa_pairs"][0]["answer"] == "가 나"
    assert fake_llm.requests[0]["model"] == "fake-model", "the endpoint's only model"
    assert fake_llm.headers[0]["authorization"] == "Bearer sk-test-123"


def test_unreachable_endpoint_is_one_clear_error(tmp_path, dead_llm_url):
    talks = tmp_path / "talks"
    talks.mkdir()
    (talks / "a.txt").write_text("아무도 듣지 않는 강의.", encoding="utf-8")
    url = dead_llm_url
    settings = PrepareConfig(llm=EndpointSettings(url=url, model="m", max_retries=1, backoff=0.01))
    with pytest.raises(EndpointUnreachable, match=f"cannot reach the LLM endpoint {url}"):
        prepare(tmp_path / "out", settings, transcripts_dir=talks)


def test_cli_with_llm_url(cli, fake_llm, tmp_path, dead_llm_url):
    fake_llm.reply = pairs_for
    talks = tmp_path / "talks"
    talks.mkdir()
    (talks / "a.txt").write_text("명령줄에서 추출하는 강의.", encoding="utf-8")
    result = cli("adapt", "prepare", "--transcripts", talks, "--out", tmp_path / "out",
                 "--llm-url", fake_llm.url, "--llm-model", "fake-model")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["total"] == 1
    dead = cli("adapt", "prepare", "--transcripts", talks, "--out", tmp_path / "o2",
               "--llm-url", dead_llm_url, "--set", "llm.max_retries=0")
    assert dead.returncode == 1
    assert "cannot reach the LLM endpoint" in dead.stderr and "Traceback" not in dead.stderr
