"""YAML loading that remembers where each value came from, so errors can say `file:line`."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class LocatedDocument:
    data: object
    lines: dict[Path_, int]  # path of keys and list indexes -> 1-based line
    duplicate_keys: list[tuple[Path_, int]]

    def line_of(self, path: Path_) -> int:
        """Line of the deepest known prefix of `path` (a missing key points at its parent)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1


# libyaml's loader where PyYAML was built with it: the same nodes and marks, several times faster
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlSyntaxError(ValueError):
    def __init__(self, line: int, message: str):
        self.line = line
        super().__init__(message)


def load_located(text: str) -> LocatedDocument:
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSyntaxError(line, f"{err.problem or err.context}") from None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        raise YamlSyntaxError(line, f"character {err.character!r} is not allowed") from None
    except yaml.YAMLError as err:
        raise YamlSyntaxError(1, str(err)) from None
    lines: dict[Path_, int] = {}
    duplicates: list[tuple[Path_, int]] = []
    if node is not None:
        _index(node, (), lines, duplicates)
    return LocatedDocument(data=data, lines=lines, duplicate_keys=duplicates)


def _index(node: yaml.Node, path: Path_, lines: dict, duplicates: list) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append((path + (key,), line))
            seen.add(key)
            lines[path + (key,)] = line
            _index(value_node, path + (key,), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (i,), lines, duplicates)
