"""Load YAML while remembering the line of every key, so errors can point at it.

The reader is strict because suite files may come from anywhere: it refuses duplicate keys
(YAML would silently keep the last one), alias "bombs" (a few lines that expand to billions of
values), nesting deep enough to exhaust the stack, files that are not UTF-8 text, and paths that
are not regular files (a FIFO would block forever, /dev/zero would never end). Every refusal is
a ConfigError naming the file and, where there is one, the line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from harness.errors import ConfigError

MAX_BYTES = 1_000_000  # the largest real suite is ~5 kB
MAX_DEPTH = 50  # nesting levels, counted through aliases
MAX_NODES = 50_000  # values in the document once every alias is expanded

MERGE_TAG = "tag:yaml.org,2002:merge"

_Parser: Any  # the event source: libyaml's (about 10x faster) when PyYAML was built with it
try:
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined, no-redef]
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class Refused(Exception):
    """The document is well-formed YAML but outside what a suite may be (see module doc)."""

    def __init__(self, message: str, line: int | None = None, path: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.line, self.path = message, line, path


class _StrictLoader(Composer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """A SafeLoader whose composer counts nodes and nesting while it builds the node graph, so a
    hostile document is stopped after a bounded amount of work."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise Refused(f"more than {MAX_NODES} values; expected a suite of reasonable size", self._line())
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refused(f"nested more than {MAX_DEPTH} levels deep", self._line())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


    def _line(self) -> int | None:
        """1-based line of the next event (the node about to be composed)."""
        event: Any = self.peek_event()
        return event.start_mark.line + 1 if event is not None and event.start_mark is not None else None


def _check(node: yaml.Node, path: tuple[Any, ...], memo: dict[int, tuple[int, int]],
           active: set[int]) -> tuple[int, int]:
    """(values, depth) of `node` with aliases expanded, memoised per node so that an alias bomb
    costs one visit per distinct node; refuses duplicate keys, cycles and oversized expansions."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise Refused("an alias refers to a value that contains it (a recursive structure)",
                      node.start_mark.line + 1, path)
    active.add(key)
    size, depth = 1, 0
    children: list[tuple[Any, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        _check_duplicates(node, path)
        children = [(k.value, v) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(enumerate(node.value))
    for part, child in children:
        child_size, child_depth = _check(child, path + (part,), memo, active)
        size, depth = size + child_size, max(depth, child_depth)
    active.discard(key)
    depth += 1
    if size > MAX_NODES:
        raise Refused(f"aliases expand to more than {MAX_NODES} values; expected a suite of reasonable size",
                      node.start_mark.line + 1, path)
    if depth > MAX_DEPTH:
        raise Refused(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded",
                      node.start_mark.line + 1, path)
    memo[key] = (size, depth)
    return size, depth


def _check_duplicates(node: yaml.MappingNode, path: tuple[Any, ...]) -> None:
    """YAML keeps the last of two equal keys without a word; a suite must not."""
    seen: dict[tuple[str, str], int] = {}
    for k, _ in node.value:
        if not isinstance(k, yaml.ScalarNode) or k.tag == MERGE_TAG:
            continue  # `<<: *base` then overriding a key of base is what merge keys are for
        line = k.start_mark.line + 1
        if (k.tag, k.value) in seen:
            first = seen[(k.tag, k.value)]
            raise Refused(f"key '{k.value}' appears twice: lines {first} and {line}", line, path + (k.value,))
        seen[(k.tag, k.value)] = line


def parse_text(text: str) -> tuple[Any, LineIndex]:
    """Parse YAML text strictly. Raises yaml.YAMLError (not YAML) or Refused (see module doc)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineIndex()
        _check(node, (), {}, set())
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    lines: dict[tuple[Any, ...], int] = {}
    _index(node, (), lines)
    return data, LineIndex(lines)


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


def read_text(path: Path) -> str:
    """The file as text, if it is a regular UTF-8 file of at most MAX_BYTES (a BOM is allowed)."""
    where = str(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # checked before opening: opening a FIFO blocks
            raise ConfigError.single((), f"not a regular file ({_kind(info.st_mode)}); expected a YAML file",
                                     file=where)
        # O_NONBLOCK: should the path become a FIFO after the check, open still returns at once.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError.single((), "not a regular file; expected a YAML file", file=where)
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError.single((), f"cannot read the file ({exc.strerror})", file=where) from None
    if len(data) > MAX_BYTES:
        raise ConfigError.single((), f"file larger than {MAX_BYTES // 1_000_000} MB; expected a suite file "
                                 "of reasonable size", found=max(len(data), info.st_size), file=where)
    return _decode(data, where)


def _decode(data: bytes, where: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        hint = "UTF-16 text" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "binary content (NUL bytes)"
        raise ConfigError.single((), f"expected UTF-8 text, found {hint}", file=where,
                                 line=data[: max(data.find(b"\x00"), 0)].count(b"\n") + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError.single((), f"expected UTF-8 text, found byte 0x{data[exc.start]:02x} that is not "
                                 "UTF-8 (save the file as UTF-8)", file=where, line=line) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def load_yaml(path: Path) -> tuple[Any, LineIndex]:
    """Parse a YAML file; every problem becomes a ConfigError naming file, line and column."""
    text = read_text(path)
    try:
        return parse_text(text)
    except Refused as exc:
        raise ConfigError.single(exc.path, exc.message, file=str(path), line=exc.line) from None
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
