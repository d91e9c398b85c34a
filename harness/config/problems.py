"""Problems found in a suite, in the user's terms: pydantic's errors translated to the key path
in the file (with what was expected), and numbers no setting takes (NaN, infinities, huge)."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.config.schema import MAX_NUMBER
from harness.errors import Problem, closest


def number_problems(data: Any) -> list[Problem]:
    """NaN, infinities and absurdly large integers anywhere in the suite: no setting takes them,
    and further on they would crash a computation (infinite CPUs) or allocate without end."""
    problems: list[Problem] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:  # a loop, not recursion: aliases may share values, but the reader bounded the total
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((path + (k,), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(path, "expected a finite number", value, True))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            problems.append(Problem(path, f"expected a number no larger than {MAX_NUMBER:.0e}", value, True))
    return problems


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic model class reached by walking `loc` from `model` (None if not a model)."""
    current: Any = _unwrap_optional(model)
    parts = list(loc)
    while parts and current is not None:
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(parts.pop(0))
            current = None if f is None else _unwrap_optional(f.annotation)
        elif typing.get_origin(current) in (dict, list):
            parts.pop(0)
            current = _unwrap_optional(typing.get_args(current)[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_optional(hint: Any) -> Any:
    """`Model | None` (or any union holding a model) -> Model; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else None
    return hint


def expected_phrase(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    if msg.startswith("Input should be"):
        return "expected" + msg[len("Input should be") :]
    if msg == "Field required":
        return "missing required key"
    return msg


def _data_path(loc: tuple[Any, ...], data: Any, kind: str = "") -> tuple[Any, ...]:
    """The part of a pydantic error location that indexes the user's data: drops the tags pydantic
    adds for union members and validators ('constrained-int', 'list[...]', 'function-after[...]').
    A last part that is not in the data stays only where it names a key (missing or unknown)."""
    path: list[Any] = []
    for i, part in enumerate(loc):
        indexes = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data))
        if indexes:
            data = data[part]
        elif not (isinstance(data, dict) and i == len(loc) - 1 and kind in ("missing", "extra_forbidden")):
            continue
        path.append(part)
    return tuple(path)


def pydantic_problems(exc: ValidationError, model: type[BaseModel], data: Any = None) -> list[Problem]:
    problems: dict[tuple[Any, ...], Problem] = {}
    for err in exc.errors():
        loc = _data_path(tuple(err["loc"]), data, err["type"]) if data is not None else tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = list(owner.model_fields) if owner else []
            expected = f"expected one of {', '.join(valid)}" if valid else "this mapping takes no such keys"
            problem = Problem(loc, f"unknown key; {expected}", loc[-1], True, closest(str(loc[-1]), valid))
        elif err["type"] == "missing":
            problem = Problem(loc, "missing required key")
        else:
            msg = expected_phrase(err["msg"])
            # Messages that already say what was found don't repeat the raw input.
            problem = Problem(loc, msg, err.get("input"), "input" in err and "found" not in msg)
        if loc in problems:  # a union reports one error per alternative: say them together
            first = problems[loc]
            first.message += ", or " + problem.message.removeprefix("expected ")
        else:
            problems[loc] = problem
    return list(problems.values())
