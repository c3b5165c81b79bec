"""Question/answer pairs and the tally each source keeps of what it read, made and skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class QAPair:
    context: str
    question: str
    answer: str
    source: str  # exam | terms | transcripts

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Problem:
    """One item that could not be used: `file: item: reason`."""

    file: str
    item: str | None
    reason: str

    def line(self) -> str:
        where = f"{self.file}: {self.item}" if self.item else self.file
        return f"{where}: {self.reason}"

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass
class Tally:
    """What one source did; becomes its entry in report.json."""

    files: int = 0
    pairs: int = 0  # pairs made, before empty ones and duplicates are removed
    skipped: int = 0  # items that gave no pair (no answer, no description, bad shape)
    failed: int = 0  # LLM extractions that gave no usable JSON
    empty: int = 0  # pairs dropped for an empty question or answer
    duplicates: int = 0  # pairs dropped as exact duplicates of an earlier pair
    problems: list[Problem] = field(default_factory=list)

    def skip(self, file: str, item: str | None, reason: str) -> None:
        self.skipped += 1
        self.problems.append(Problem(file, item, reason))

    def fail(self, file: str, item: str | None, reason: str) -> None:
        self.failed += 1
        self.problems.append(Problem(file, item, reason))

    def note(self, file: str, item: str | None, reason: str) -> None:
        """A problem that is not about one item, such as a missing folder."""
        self.problems.append(Problem(file, item, reason))

    @property
    def kept(self) -> int:
        return self.pairs - self.empty - self.duplicates

    def as_dict(self) -> dict:
        return {
            "files": self.files, "pairs": self.pairs, "kept": self.kept,
            "skipped": self.skipped, "failed": self.failed, "empty": self.empty,
            "duplicates": self.duplicates,
            "problems": [p.as_dict() for p in self.problems],
        }


def json_files(folder: Path, tally: Tally) -> Iterator[tuple[Path, object]]:
    """Each `*.json` file of a folder with its data; a file that is not JSON is counted and
    reported in the tally, not yielded."""
    for path in sorted(folder.glob("*.json")):
        tally.files += 1
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            tally.skip(str(path), None, f"not valid JSON: {err}")
            continue
        yield path, data
