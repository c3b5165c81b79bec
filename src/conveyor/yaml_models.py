"""Pydantic models read from YAML files, with every problem reported as `file:line: field: message`.

Shared by pipeline files and recipe configs. List items are named by their
`name` key where they have one (`tasks[train].resources.mem`), else by index.
"""

from __future__ import annotations

import re
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from conveyor.errors import SpecError
from conveyor.yaml_lines import LocatedDocument, YamlSyntaxError, load_located

M = TypeVar("M", bound=BaseModel)
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_document(text: str, source: str, shape: str = "a mapping of keys to values"
                  ) -> LocatedDocument:
    """Parse YAML that must be a mapping; syntax errors and duplicate keys are SpecErrors."""
    try:
        doc = load_located(text)
    except YamlSyntaxError as err:
        raise SpecError([f"{source}:{err.line}: not valid YAML: {err}"]) from None
    problems = [
        f"{source}:{line}: {field_name(doc, key)}: the key appears twice; keep one"
        for key, line in doc.duplicate_keys
    ]
    if not isinstance(doc.data, dict):
        raise SpecError(problems + [f"{source}:1: the file must be {shape}"])
    if problems:
        raise SpecError(problems)
    return doc


def validate(model: type[M], doc: LocatedDocument, source: str,
             overrides: dict[tuple, str] | None = None) -> M:
    """The model, or SpecError with one line per problem; `overrides` maps a key path to the
    `--set` option that supplied it, so its problems name the option instead of a line."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as err:
        raise SpecError(
            sorted((describe(model, doc, source, e, overrides) for e in err.errors()),
                   key=line_number)
        ) from None


def apply_overrides(data: dict, assignments: list[str]) -> dict[tuple, str]:
    """Apply `a.b.c=value` (value read as YAML) to `data`; returns each path and its option."""
    applied = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise SpecError([f"--set {assignment}: write it as section.key=value"])
        path = tuple(key.strip().split("."))
        target = data
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SpecError([f"--set {assignment}: {part} is not a section"])
        target[path[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        applied[path] = f"--set {assignment}"
    return applied


def line_number(problem: str) -> int:
    parts = problem.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def field_name(doc: LocatedDocument, path: tuple) -> str:
    out = ""
    node = doc.data
    for part in path:
        if isinstance(part, int):
            label = part
            item = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(item, dict) and isinstance(item.get("name"), str) \
                    and _LABEL.match(item["name"]):
                label = item["name"]
            out += f"[{label}]"
            node = item
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def describe(model: type[BaseModel], doc: LocatedDocument, source: str, error: dict,
             overrides: dict[tuple, str] | None = None) -> str:
    path = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    kind = error["type"]
    if kind == "extra_forbidden":
        known = known_keys(model, path[:-1])
        message = "unknown key" + (f"; known keys here: {', '.join(known)}" if known else "")
    elif kind == "missing":
        message = "is required"
    else:
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        if "input" in error and not isinstance(given, (dict, list)) and repr(given) not in message:
            message = f"{message} (got {given!r})"
    for override_path, option in (overrides or {}).items():
        if path[: len(override_path)] == override_path:
            return f"{option}: {field_name(doc, path)}: {message}"
    return f"{source}:{doc.line_of(path)}: {field_name(doc, path)}: {message}"


def known_keys(model: type[BaseModel], model_path: tuple) -> list[str]:
    """Keys the model at `model_path` accepts, by their YAML spelling."""
    for part in model_path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        annotation = getattr(field, "annotation", None)
        inner = getattr(annotation, "__args__", (annotation,))
        nested = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return []
        model = nested
    return [f.alias or name for name, f in model.model_fields.items()]
