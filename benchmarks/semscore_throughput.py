"""SemScore throughput: pairs per second with the default embedder, batched, against a naive
loop that embeds each pair on its own, in the same run.

    .venv/bin/python benchmarks/semscore_throughput.py [--pairs 2000]

The pairs are Korean: answers of the sample data, each made distinct, against references
drawn from the same answers. Not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "domain-qa" / "data"


def korean_pairs(count: int) -> tuple[list[str], list[str]]:
    from conveyor.adapt.glossary import TermTemplates, read_terms_folder
    from conveyor.adapt.qa import Tally

    texts = [p.answer for p in read_terms_folder(SAMPLE / "terms", TermTemplates(), Tally())]
    for line in (SAMPLE / "transcripts" / "lecture_lc.jsonl").read_text().splitlines():
        output = json.loads(json.loads(line)["json_output"].strip("`json\n"))
        texts += [str(p["answer"][0] if isinstance(p["answer"], list) else p["answer"])
                  for p in output["qa_pairs"]]
    answers = [f"{texts[i % len(texts)]} (답변 {i})" for i in range(count)]
    references = [texts[(i * 7) % len(texts)] for i in range(count)]
    return answers, references


def naive(answers: list[str], references: list[str], embedder) -> list[float]:
    scores = []
    for answer, reference in zip(answers, references, strict=True):
        a, b = embedder.encode([answer, reference])
        scores.append(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    from conveyor.adapt.semscore import load_embedder, semscores

    embedder = load_embedder()
    answers, references = korean_pairs(args.pairs)
    embedder.encode(answers[:2])  # load the weights outside the timings
    started = time.perf_counter()
    ours = semscores(answers, references, embedder)
    batched = time.perf_counter() - started
    started = time.perf_counter()
    baseline = naive(answers, references, embedder)
    looped = time.perf_counter() - started
    assert np.allclose(ours, baseline, atol=1e-3), "both ways must give the same scores"
    print(f"{args.pairs} Korean pairs, default embedder (multilingual USE v3)")
    print(f"naive per-pair loop : {args.pairs / looped:8.1f} pairs/s ({looped:.1f} s)")
    print(f"conveyor semscores  : {args.pairs / batched:8.1f} pairs/s ({batched:.1f} s)")
    print(f"ratio               : {looped / batched:.1f}x")


if __name__ == "__main__":
    main()
