"""Recipe step 3: how well each model answers the held-out questions, base vs tuned.

    conveyor adapt evaluate --data OUT/dataset --model base=default --model tuned=RUN/merged \
        --out EVAL_DIR [--split test] [--limit N] [--judge-url URL --judge-model NAME]

check inputs and endpoints -> answers per model (reused when already there) -> SemScore ->
truthfulness by an LLM judge (or "not run", with the reason) -> metrics.json, plots, report.html.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from conveyor.adapt import answers as answers_
from conveyor.adapt import judge, semscore
from conveyor.adapt.formatting import ChatFormat
from conveyor.adapt.llm_client import ChatClient, EndpointSettings
from conveyor.adapt.prepare import load_prepared
from conveyor.errors import ConveyorError


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(default=128, ge=1)
    batch_size: int = Field(default=8, ge=1)
    repetition_penalty: float = Field(default=1.0, ge=1.0)  # 1.0: plain greedy decoding


class SemScoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    embedder: str = semscore.DEFAULT_EMBEDDER  # or a local sentence-transformers folder
    batch_size: int = Field(default=32, ge=1)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    split: str = "test"
    limit: int | None = Field(default=None, ge=1)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    semscore: SemScoreSettings = Field(default_factory=SemScoreSettings)
    judge: EndpointSettings = Field(default_factory=EndpointSettings)
    endpoints: EndpointSettings = Field(default_factory=EndpointSettings)  # models under test
    format: ChatFormat = Field(default_factory=ChatFormat)
    report_changes: int = Field(default=5, ge=0)  # questions shown where the last model gained or lost most


class EvalInputError(ConveyorError):
    exit_code = 2


Progress = Callable[[str, int, int], None]  # (what, done, total)


def evaluate(data: Path, specs: list[str], out: Path, config: EvalConfig, home: Path,
             progress: Progress = lambda what, done, total: None) -> dict:
    sources = answers_.parse_sources(specs)
    rows = _load_split(data, config.split, config.limit)
    clients = {s.name: ChatClient(config.endpoints.endpoint(s.location, s.model))
               for s in sources if s.is_endpoint}
    for client in clients.values():
        client.check()
    judge_client = None
    if config.judge.url:
        judge_client = ChatClient(config.judge.endpoint(), cache_dir=out / "judge-cache")
        judge_client.check()
    embedder = semscore.load_embedder(config.semscore.embedder)

    questions = [r["question"] for r in rows]
    references = [r["answer"] for r in rows]
    by_model: dict[str, list[str]] = {}
    for source in sources:
        by_model[source.name] = _answers(source, questions, out, config, home,
                                         clients.get(source.name), progress)
    scores = {name: semscore.semscores(got, references, embedder, config.semscore.batch_size)
              for name, got in by_model.items()}
    truth: dict[str, list[int | None]] = {}
    if judge_client:
        for name, got in by_model.items():
            done = [0]

            def tick(done=done, name=name, total=len(got)) -> None:
                done[0] += 1
                progress(f"judging {name}", done[0], total)

            judgments = judge.judge_all(judge_client, list(zip(questions, references, got,
                                                               strict=True)), tick)
            truth[name] = [j.score for j in judgments]

    metrics = {"models": {}, "split": config.split, "n": len(rows), "rows": []}
    for name in by_model:
        entry = {"semscore": semscore.summarize(scores[name])}
        entry["truthfulness"] = judge.summarize(truth[name]) if judge_client else {
            "status": "not run",
            "reason": "no judge endpoint configured (--judge-url, --judge-model)",
        }
        metrics["models"][name] = entry
    for i, row in enumerate(rows):
        metrics["rows"].append({
            "question": row["question"],
            "reference": row["answer"],
            "models": {name: {"answer": by_model[name][i], "semscore": round(scores[name][i], 4),
                              "truthfulness": truth[name][i] if judge_client else None}
                       for name in by_model},
        })
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    from conveyor.adapt.report import write_report

    write_report(metrics, out, config.report_changes)
    return metrics


def _load_split(data: Path, split: str, limit: int | None) -> list[dict]:
    rows = load_prepared(data, split)[split]
    if len(rows) == 0:
        raise EvalInputError(f"{data}: split {split!r} is empty; nothing to evaluate")
    rows = [dict(r) for r in rows]
    return rows[:limit] if limit else rows


def _answers(source, questions, out: Path, config: EvalConfig, home: Path, client,
             progress: Progress) -> list[str]:
    file = out / "answers" / f"{source.name}.jsonl"
    key = answers_.cache_key(source, {"generation": config.generation.model_dump(),
                                      "format": config.format.model_dump()})
    saved = answers_.load_answers(file, key)
    todo = [q for q in dict.fromkeys(questions) if q not in saved]
    if todo:
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            progress(f"answering with {source.name}", done[0], len(todo))

        if client is not None:
            got = answers_.generate_endpoint(client, todo, config.format,
                                             config.generation.max_new_tokens, tick)
        else:
            got = answers_.generate_local(answers_.model_folder(source, home), todo,
                                          config.format, config.generation, tick)
        saved.update((q, a) for q, a in zip(todo, got, strict=True) if a is not None)
        answers_.save_answers(file, key, saved)
    return [saved.get(q, "") for q in questions]  # a failed request counts as no answer
