"""Recipe configs: a shipped YAML file of defaults, a user's file, `--set section.key=value`."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from conveyor.errors import SpecError
from conveyor.yaml_models import apply_overrides, load_document, validate

M = TypeVar("M", bound=BaseModel)
CONFIGS = Path(__file__).parent / "configs"


def load_recipe_config(model: type[M], default: str, file: Path | None = None,
                       assignments: list[str] = ()) -> M:
    """`file` (or the shipped configs/`default`) validated as `model`, after `--set` overrides.
    A bare file name that is not in the current folder names a shipped profile."""
    path = Path(file) if file else CONFIGS / default
    if file and not path.exists() and path.name == str(file) and (CONFIGS / path.name).exists():
        path = CONFIGS / path.name  # a shipped profile named alone, e.g. train-gpu.yaml
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{path}: no such config file"]) from None
    doc = load_document(text, str(path))
    overrides = apply_overrides(doc.data, list(assignments))
    return validate(model, doc, str(path), overrides)
