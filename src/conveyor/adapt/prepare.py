"""Recipe step 1: domain material -> a Q/A dataset for supervised fine-tuning.

    conveyor adapt prepare --exam DIR --terms DIR --transcripts DIR --out OUT

Reads each source that is given, drops empty pairs and exact duplicates,
splits train/test deterministically for the seed, and writes:
OUT/dataset/ (datasets.DatasetDict, save_to_disk), OUT/qa.jsonl (every pair),
OUT/report.json (what each source read, made, skipped), and, when an LLM
extraction failed, OUT/failures.jsonl with the reason and the raw output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from conveyor.adapt.exam import ExamMarkers, read_exam_folder
from conveyor.adapt.glossary import TermTemplates, read_terms_folder
from conveyor.adapt.llm_client import ChatClient, EndpointSettings
from conveyor.adapt.qa import QAPair, Tally
from conveyor.adapt.transcripts import (
    ExtractionSettings,
    Failure,
    extract_with_llm,
    read_extracted,
)
from conveyor.errors import ConveyorError

COLUMNS = ("context", "question", "answer", "source")


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    test_size: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 42
    exam: ExamMarkers = Field(default_factory=ExamMarkers)
    terms: TermTemplates = Field(default_factory=TermTemplates)
    transcripts: ExtractionSettings = Field(default_factory=ExtractionSettings)
    llm: EndpointSettings = Field(default_factory=EndpointSettings)


class DatasetError(ConveyorError):
    """The dataset given to train or evaluate is missing or not what prepare writes."""

    exit_code = 2


def load_prepared(data: Path, split: str | None = None):
    """The DatasetDict that prepare wrote, with its `question`/`answer` columns checked;
    `split`, when given, must be in it."""
    if not data.exists():
        raise DatasetError(f"{data}: no such dataset; run `conveyor adapt prepare` first")
    from datasets import DatasetDict, disable_progress_bars, load_from_disk

    disable_progress_bars()
    try:
        dataset = load_from_disk(str(data))
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(f"{data}: not a saved dataset ({err}); give OUT/dataset") from None
    if not isinstance(dataset, DatasetDict):
        raise DatasetError(f"{data}: a single Dataset; expected the DatasetDict that"
                           " `conveyor adapt prepare` writes")
    if split is not None and split not in dataset:
        raise DatasetError(f"{data}: no split {split!r}; it has {', '.join(dataset)}")
    for name, rows in dataset.items():
        missing = {"question", "answer"} - set(rows.column_names)
        if missing and name in (split, "train", "test"):
            raise DatasetError(f"{data}: split {name!r} has no column(s)"
                               f" {', '.join(sorted(missing))}; use the dataset that"
                               " `conveyor adapt prepare` wrote")
    return dataset


class NothingUsable(ConveyorError):
    """No source gave a single usable pair; `problems` says what was wrong with what was found."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


@dataclass
class Prepared:
    report: dict
    problems: list[str] = field(default_factory=list)


Progress = Callable[..., None]  # progress(total=N) once, then progress(advance=1) per LLM request


def prepare(
    out: Path,
    config: PrepareConfig,
    exam_dir: Path | None = None,
    terms_dir: Path | None = None,
    transcripts_dir: Path | None = None,
    progress: Progress | None = None,
) -> Prepared:
    if not (exam_dir or terms_dir or transcripts_dir):
        raise ConveyorError("give at least one of --exam, --terms, --transcripts")
    out.mkdir(parents=True, exist_ok=True)
    tallies = {name: Tally() for name in ("exam", "terms", "transcripts")}
    failures: list[Failure] = []
    pairs: list[QAPair] = []
    llm_requests = 0

    if _folder(exam_dir, tallies["exam"]):
        pairs += read_exam_folder(exam_dir, config.exam, tallies["exam"])
    if _folder(terms_dir, tallies["terms"]):
        pairs += read_terms_folder(terms_dir, config.terms, tallies["terms"])
    if _folder(transcripts_dir, tallies["transcripts"]):
        tally = tallies["transcripts"]
        for path in sorted(transcripts_dir.glob("*.jsonl")):
            tally.files += 1
            pairs += read_extracted(path, tally, failures)
        raw = [p for p in sorted(transcripts_dir.glob("*.txt")) if not p.with_suffix(".jsonl").exists()]
        if raw and not config.llm.url:
            for path in raw:
                tally.skip(str(path), None, "a raw transcript needs an LLM to extract pairs;"
                                            " give --llm-url (and --llm-model)")
        elif raw:
            tally.files += len(raw)
            client = ChatClient(config.llm.endpoint(), cache_dir=out / "llm-cache")
            pairs += extract_with_llm(
                raw, client, config.transcripts, out / "extracted", tally, failures, progress
            )
            llm_requests = client.asked

    pairs = _clean(pairs, tallies)
    report = {
        "sources": {name: tally.as_dict() for name, tally in tallies.items()},
        "total": len(pairs),
        "empty": sum(t.empty for t in tallies.values()),
        "duplicates": sum(t.duplicates for t in tallies.values()),
        "splits": {"train": 0, "test": 0},
        "seed": config.seed,
        "test_size": config.test_size,
        "llm_requests": llm_requests,
    }
    _write_failures(out / "failures.jsonl", failures)
    problems = [p.line() for t in tallies.values() for p in t.problems]
    if not pairs:
        _write_json(out / "report.json", report)
        raise NothingUsable(
            f"no usable question/answer pairs in the sources given; see {out / 'report.json'}",
            problems,
        )
    splits = _save_dataset(pairs, out / "dataset", config.test_size, config.seed)
    report["splits"] = splits
    with open(out / "qa.jsonl", "w", encoding="utf-8") as file:
        for pair in pairs:
            file.write(json.dumps(pair.as_dict(), ensure_ascii=False) + "\n")
    _write_json(out / "report.json", report)
    return Prepared(report=report, problems=problems)


def _folder(folder: Path | None, tally: Tally) -> bool:
    if folder is None:
        return False
    if not folder.is_dir():
        tally.note(str(folder), None, "no such folder")
        return False
    return True


def _clean(pairs: list[QAPair], tallies: dict[str, Tally]) -> list[QAPair]:
    """Drop pairs with an empty question or answer, then exact duplicates (first one kept)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for pair in pairs:
        if not pair.question.strip() or not pair.answer.strip():
            tallies[pair.source].empty += 1
            continue
        key = (pair.question, pair.answer)
        if key in seen:
            tallies[pair.source].duplicates += 1
            continue
        seen.add(key)
        kept.append(pair)
    return kept


def _save_dataset(pairs: list[QAPair], target: Path, test_size: float, seed: int) -> dict:
    """train/test DatasetDict written next to `target`, then moved into place in one step."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()  # the CLI shows its own progress
    data = Dataset.from_dict({c: [getattr(p, c) for p in pairs] for c in COLUMNS})
    n_test = max(1, round(len(pairs) * test_size)) if test_size > 0 and len(pairs) > 1 else 0
    if n_test:
        split = data.train_test_split(test_size=n_test, seed=seed, shuffle=True)
        splits = DatasetDict(train=split["train"], test=split["test"])
    else:  # no test split at all: datasets cannot load back an empty one it saved
        splits = DatasetDict(train=data)
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    splits.save_to_disk(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return {"train": len(splits["train"]), "test": len(splits["test"]) if n_test else 0}


def _write_failures(path: Path, failures: list[Failure]) -> None:
    if not failures:
        path.unlink(missing_ok=True)
        return
    with open(path, "w", encoding="utf-8") as file:
        for failure in failures:
            file.write(json.dumps(failure.as_dict(), ensure_ascii=False) + "\n")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
