"""Errors a user can act on: they name the file, the key path, what was expected and found.

The CLI prints these without a traceback and exits with status 2. Anything else that
escapes is a bug in the harness and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The valid name a typo most likely meant, if any is close enough."""
    found = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.6)
    return found[0] if found else None


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Problem:
    """One thing wrong with the input."""

    path: Path
    message: str  # what was expected / what is wrong, in words
    found: Any = None
    has_found: bool = False
    suggestion: str | None = None
    file: str | None = None
    line: int | None = None

    def render(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: {format_path(self.path)}: {self.message}"
        if self.has_found:
            text += f", found {short_repr(self.found)}"
        if self.suggestion:
            text += f" (did you mean '{self.suggestion}'?)"
        return text


class HarnessError(Exception):
    """Base class of errors the CLI reports without a traceback."""

    exit_code = 2


@dataclass
class ConfigError(HarnessError):
    """Bad user input (suite file, override, plugin name). Holds one or more problems."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(p.render() for p in self.problems)

    @classmethod
    def single(
        cls,
        path: Sequence[str | int],
        message: str,
        *,
        found: Any = ...,
        choices: Iterable[str] | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> ConfigError:
        suggestion = closest(str(found), choices) if choices is not None and found is not ... else None
        return cls(
            [
                Problem(
                    tuple(path),
                    message,
                    found=None if found is ... else found,
                    has_found=found is not ...,
                    suggestion=suggestion,
                    file=file,
                    line=line,
                )
            ]
        )

    def located(self, file: str | None, prefix: Sequence[str | int] = (), lines: Any = None) -> ConfigError:
        """The same problems, placed under `prefix` in `file` (line numbers looked up in `lines`)."""
        out = []
        for p in self.problems:
            path = tuple(prefix) + p.path
            line = p.line
            if line is None and lines is not None:
                line = lines.line_of(path)
            out.append(
                Problem(path, p.message, p.found, p.has_found, p.suggestion, p.file or file, line)
            )
        return ConfigError(out)


class RunFailed(Exception):
    """A run cannot go on (non-finite loss, environment error): recorded with this reason."""
