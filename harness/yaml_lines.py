"""Load YAML while remembering the line of every key, so errors can point at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError


class LineIndex:
    """Maps key paths (("tasks", "identity", "args")) to 1-based line numbers."""

    def __init__(self, lines: dict[tuple[Any, ...], int] | None = None) -> None:
        self.lines = lines or {}

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """Line of the deepest prefix of `path` present in the file."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def _index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            out[child] = key.start_mark.line + 1
            _index(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _index(value, path + (i,), out)


def load_yaml(path: Path) -> tuple[Any, LineIndex]:
    """Parse a YAML file; syntax errors become a ConfigError naming file, line and column."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError.single((), f"cannot read the file ({exc.strerror})", file=str(path)) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        col = f", column {mark.column + 1}" if mark is not None else ""
        problem = f"{exc.problem or 'invalid YAML'}{col}"
        if exc.context:
            problem = f"{exc.context}: {problem}"
        raise ConfigError.single((), f"YAML syntax error: {problem}", file=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError.single((), f"YAML error: {exc}", file=str(path)) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _index(node, (), lines)
    return data, LineIndex(lines)
