"""Answers of the models under evaluation: local folders (transformers, in process, batched,
greedy) or OpenAI-compatible endpoints (`URL#model`), asked the same way as in training.

Answers are kept per model in EVAL_DIR/answers/NAME.jsonl and reused when the same source is
asked the same question again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from conveyor.adapt.formatting import ChatFormat, render_prompt, user_turn
from conveyor.adapt.llm_client import ChatClient, ChatError
from conveyor.adapt.models import DEFAULT_MODEL, check_model_folder, resolve_model
from conveyor.errors import UsageError


@dataclass(frozen=True)
class ModelSource:
    name: str
    location: str  # a model folder, `default`, or an endpoint's base URL
    model: str | None = None  # the endpoint's model name (after `#`)

    @property
    def is_endpoint(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    @property
    def key(self) -> str:
        return f"{self.location}#{self.model}" if self.model else self.location


def parse_sources(specs: list[str]) -> list[ModelSource]:
    """`NAME=SOURCE` options: checked now, so that a typo fails before any generation."""
    if not specs:
        raise UsageError("give at least one --model NAME=SOURCE, e.g. --model base=default")
    sources: list[ModelSource] = []
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or not name or not where:
            raise UsageError(f"--model {spec!r}: write it as NAME=SOURCE (a model folder,"
                             " `default`, or http://host:port/v1#model)")
        if any(s.name == name for s in sources):
            raise UsageError(f"--model {name}: the name is used twice")
        location, _, model = where.partition("#")
        source = ModelSource(name, location.rstrip("/") if "://" in location else location,
                             model or None)
        if not source.is_endpoint and location != DEFAULT_MODEL:
            if "://" in location:
                raise UsageError(f"--model {spec!r}: only http(s) endpoints are supported")
            check_model_folder(Path(location))
        sources.append(source)
    return sources


def cache_key(source: ModelSource, settings: dict) -> str:
    """What makes saved answers still valid: the source, the weights of a local folder (a model
    trained again in the same place answers anew), and the generation and format settings."""
    weights = ""
    if not source.is_endpoint and source.location != DEFAULT_MODEL:
        files = sorted(Path(source.location).glob("*.safetensors"))
        weights = ",".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return json.dumps([source.key, weights, settings], sort_keys=True, ensure_ascii=False)


def load_answers(file: Path, key: str) -> dict[str, str]:
    """Answers saved earlier under the same cache key, by question."""
    if not file.exists():
        return {}
    saved = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("key") == key:
            saved[row["question"]] = row["answer"]
    return saved


def save_answers(file: Path, key: str, answers: dict[str, str]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w", encoding="utf-8") as out:
        for question, answer in answers.items():
            out.write(json.dumps({"key": key, "question": question, "answer": answer},
                                 ensure_ascii=False) + "\n")


def generate_local(folder: Path, questions: list[str], fmt: ChatFormat, settings,
                   on_done=lambda n: None) -> list[str]:
    """Greedy answers in batches; `settings` is the config's `generation` section."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    answers: list[str] = []
    for start in range(0, len(questions), settings.batch_size):
        batch = questions[start:start + settings.batch_size]
        prompts = [render_prompt(tokenizer, q, fmt) for q in batch]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=settings.max_new_tokens,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                    repetition_penalty=settings.repetition_penalty)
        new = output[:, inputs["input_ids"].shape[1]:]
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        on_done(len(batch))
    return answers


def generate_endpoint(client: ChatClient, questions: list[str], fmt: ChatFormat,
                      max_tokens: int, on_done=lambda n: None) -> list[str | None]:
    """Each answer, or None where the endpoint failed for good (not saved, asked again next run)."""
    replies = client.chat_all(
        [[{"role": "user", "content": user_turn(q, fmt)}] for q in questions],
        {"temperature": 0, "max_tokens": max_tokens}, on_done=lambda: on_done(1),
    )
    return [None if isinstance(r, ChatError) else r.strip() for r in replies]


def model_folder(source: ModelSource, home: Path) -> Path:
    return resolve_model(source.location, home)
