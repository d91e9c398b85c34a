"""Command-line overrides (`key.path=value`, values in YAML syntax) applied to a suite file's
contents before validation; `params=tuned|default` picks where parameters come from."""

from __future__ import annotations

from typing import Any

import yaml

from harness.config.schema import COMMAND_LINE, SuiteModel
from harness.config.yaml_lines import Refused, parse_text
from harness.errors import ConfigError


def parse_value(text: str, key: tuple[str, ...] = ()) -> Any:
    """Command-line values use YAML syntax: 3, 1e-3, true, [qmix, vdn], {a: 1}; text that is not
    YAML stays a string. Read as strictly as a suite file (no duplicate keys or alias bombs)."""
    if text == "":
        return ""
    try:
        return parse_text(text)[0]
    except yaml.YAMLError:
        return text
    except Refused as exc:
        raise ConfigError.single(key + exc.path, exc.message, found=text, file=COMMAND_LINE) from None


def parse_overrides(tokens: list[str]) -> list[tuple[tuple[str, ...], Any, str]]:
    out = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError.single((), "expected key=value", found=token, file=COMMAND_LINE)
        path = tuple(key.split("."))
        out.append((path, parse_value(value, path), token))
    return out


def apply_overrides(raw: dict[str, Any], tokens: list[str]) -> set[tuple[str, ...]]:
    """Apply `a.b.c=value` tokens in place; returns the overridden key paths."""
    touched: set[tuple[str, ...]] = set()
    for path, value, _token in parse_overrides(tokens):
        if path == ("tasks",) and isinstance(value, list):
            raw["tasks"] = _select_tasks(raw.get("tasks") or {}, value)
            _drop_claims_on_other_tasks(raw)
            touched.add(path)
            continue
        if path[0] not in SuiteModel.model_fields:
            raise ConfigError.single(
                path[:1], "unknown suite key", found=path[0], choices=SuiteModel.model_fields, file=COMMAND_LINE
            )
        _check_task_exists(raw, path)
        node = raw
        for depth, part in enumerate(path[:-1], start=1):
            nxt = node.get(part) if isinstance(node, dict) else None
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
                # Made by the override (a task or algorithm the file lacks, a value replaced by a
                # mapping): whatever is wrong beneath it is the command line's doing.
                touched.add(path[:depth])
            node = nxt
        node[path[-1]] = value
        touched.add(path)
    return touched


def _check_task_exists(raw: dict[str, Any], path: tuple[str, ...]) -> None:
    """`tasks.NAME.key=value` sets a key of an existing task; a typo in NAME would otherwise make a
    half-defined new task whose errors read as if the file were wrong."""
    tasks = raw.get("tasks")
    if len(path) > 2 and path[0] == "tasks" and isinstance(tasks, dict) and path[1] not in tasks:
        raise ConfigError.single(path[:2], f"unknown task; expected one of {', '.join(map(str, tasks))}",
                                 found=path[1], choices=map(str, tasks), file=COMMAND_LINE)


def _drop_claims_on_other_tasks(raw: dict[str, Any]) -> None:
    """`tasks=[...]` runs a part of the suite: its claims on the other tasks go with them."""
    claims = raw.get("claims")
    if isinstance(claims, dict):
        raw["claims"] = {k: c for k, c in claims.items() if not isinstance(c, dict) or c.get("task") in raw["tasks"]}


def _select_tasks(tasks: dict[str, Any], names: list[Any]) -> dict[str, Any]:
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise ConfigError.single(
            ("tasks",), f"unknown task; expected some of {', '.join(tasks)}", found=unknown[0],
            choices=tasks, file=COMMAND_LINE,
        )
    return {n: tasks[n] for n in names}


PARAMS_MODES = ("default", "tuned")


def split_params_mode(overrides: list[str]) -> tuple[list[str], str]:
    """`params=tuned` / `params=default` choose where parameters come from; every other
    `params...` token is an ordinary override of the suite's params table."""
    mode, rest = "default", []
    for token in overrides:
        key, _, value = token.partition("=")
        if key == "params" and value.strip() in PARAMS_MODES:
            mode = value.strip()
        else:
            rest.append(token)
    return rest, mode
