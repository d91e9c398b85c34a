"""A paper's ablation as an algorithm of its own: the base algorithm under another name, with a
few Config defaults changed. One call declares it, so every ablation reads the same way and
`harness show algorithm=NAME` lists its changed defaults with the base's field docs."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, TypeVar, cast

from harness.registry import register_algorithm

A = TypeVar("A", bound=type)


def ablation(base: A, name: str, class_name: str, doc: str, **defaults: Any) -> A:
    """Register `base` again as `name`: a subclass `class_name` (documented by `doc`) whose
    Config subclasses base's with `defaults` as the new defaults. The ablation pins them:
    `harness tune` does not search them (tuning `kappa_cd` would undo "without the CD loss").
    Names a field the base's Config lacks: TypeError (a typo in the algorithm's own module)."""
    base_config: type = cast(Any, base).Config  # every algorithm class declares its Config dataclass
    fields = {f.name: f for f in dataclasses.fields(base_config)}
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise TypeError(f"{base.__name__}.Config has no field {unknown[0]}; expected one of {', '.join(fields)}")
    module = sys._getframe(1).f_globals["__name__"]  # the caller's module: where pickles and docs look
    config = dataclasses.make_dataclass(
        f"{class_name}Config",
        [(key, fields[key].type, dataclasses.field(default=value)) for key, value in defaults.items()],
        bases=(base_config,),
        namespace={"__doc__": f"{base_config.__name__} with {_listed(defaults)}: {doc}", "__module__": module},
    )
    config.__qualname__ = f"{class_name}.Config"  # how pickle finds it: the caller binds `class_name`
    variant = type(class_name, (base,), {"__doc__": doc, "Config": config, "__module__": module})
    return register_algorithm(name)(variant)  # type: ignore[return-value]  # `type()` makes a plain type


def _listed(defaults: dict[str, Any]) -> str:
    return ", ".join(f"{key} = {value!r}" for key, value in defaults.items())
