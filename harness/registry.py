"""Find algorithms and environment backends by name.

Three sources, in this order: the built-in modules of the `algorithms` and `scenarios`
packages (each registers itself with a decorator when imported), the `harness.algorithms`
and `harness.envs` entry points of installed distributions, and `module:Class` strings for
a quick experiment without packaging.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar, cast

from harness.api import Algorithm, Backend, learns
from harness.errors import ConfigError

T = TypeVar("T", bound=type)

_ALGORITHMS: dict[str, type] = {}
_ENVS: dict[str, type] = {}
_loaded = False


def _registrar(table: dict[str, type], name: str) -> Callable[[T], T]:
    def wrap(cls: T) -> T:
        cls.name = name  # type: ignore[attr-defined]
        table[name] = cls
        return cls

    return wrap


def builtin_algorithms_dir() -> Path:
    """The folder of the built-in algorithms (where `harness new algorithm` writes by default)."""
    import algorithms

    return Path(algorithms.__path__[0])


def builtin_suites_dir() -> Path:
    """The folder of the built-in suites (`suite=NAME` reads NAME.yaml there)."""
    from scenarios import SUITES_DIR

    return SUITES_DIR


def register_algorithm(name: str) -> Callable[[T], T]:
    """Class decorator: make an algorithm available as `name` in suites and on the CLI."""
    return _registrar(_ALGORITHMS, name)


def register_env(name: str) -> Callable[[T], T]:
    """Class decorator: make an environment backend available as `env: name` in suites."""
    return _registrar(_ENVS, name)


def _import_package_modules(package: str, skip: tuple[str, ...] = ()) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in skip:
            continue
        importlib.import_module(f"{package}.{info.name}")


def _load_entry_points(group: str, table: dict[str, type]) -> None:
    for ep in entry_points(group=group):
        if ep.name in table:
            continue
        try:
            table[ep.name] = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break the harness
            table.setdefault(f"!{ep.name}", type("Broken", (), {"error": repr(exc)}))


def load_all() -> None:
    """Import built-ins and entry points once (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    _import_package_modules("scenarios")
    _import_package_modules("algorithms", skip=("common",))
    _load_entry_points("harness.algorithms", _ALGORITHMS)
    _load_entry_points("harness.envs", _ENVS)


# Import paths a suite may name ('module:Class' algorithms, a PettingZoo factory): resolving one
# runs that module's code, so only modules the user trusts are imported. Trusted: this project's
# own packages, the environment libraries its backends wrap, the modules of installed
# `harness.*` entry points, and what the suite's `allow_imports` (a suite key, so also
# `allow_imports=[...]` on the command line) adds. The gate is up while a suite is resolved
# (every command resolves its suite before anything runs); None, in workers and for direct API
# use, means the names were checked already or come from code, not from a file.
TRUSTED_PACKAGES = ("harness", "algorithms", "scenarios", "pettingzoo", "mpe2")
ALLOWED_IMPORTS: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("allowed_imports",
                                                                                         default=None)


@functools.cache
def _entry_point_modules() -> frozenset[str]:
    """Modules of the installed plugins: read once per process (as `load_all` reads them), not
    at every name a suite resolves."""
    return frozenset(ep.value.partition(":")[0] for group in ("harness.algorithms", "harness.envs")
                     for ep in entry_points(group=group))


def check_import_allowed(module_name: str, spec: str, path: tuple[str | int, ...]) -> None:
    """ConfigError unless `module_name` (or a package above it) is trusted (see ALLOWED_IMPORTS);
    nothing is imported to decide."""
    extra = ALLOWED_IMPORTS.get()
    if extra is None:
        return
    allowed = (*TRUSTED_PACKAGES, *extra, *_entry_point_modules())
    if not any(module_name == a or module_name.startswith(a + ".") for a in allowed):
        top = module_name.partition(".")[0]
        raise ConfigError.single(
            path, f"module '{module_name}' is not allowed to be imported: add it to the suite's allow_imports "
            f"(allow_imports: [{top}], or allow_imports=[{top}] on the command line) if you trust its code",
            found=spec)


def _from_import_path(spec: str, kind: str, path: tuple[str | int, ...]) -> Any:
    module_name, _, attr = spec.partition(":")
    check_import_allowed(module_name, spec, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError.single(path, f"cannot import module '{module_name}' for {kind} ({exc})", found=spec) from None
    obj: Any = getattr(module, attr, None)
    if not isinstance(obj, type):
        raise ConfigError.single(path, f"module '{module_name}' has no class '{attr}'", found=spec)
    if not hasattr(obj, "name"):
        setattr(obj, "name", spec)  # noqa: B010 - unknown plugin class
    return obj


def _lookup(name: str, table: dict[str, type], kind: str, path: tuple[str | int, ...]) -> Any:
    if ":" in name:
        return _from_import_path(name, kind, path)
    load_all()
    if name in table:
        return table[name]
    broken = table.get(f"!{name}")
    if broken is not None:
        raise ConfigError.single(path, f"the {kind} plugin failed to load: {broken.error}", found=name)  # type: ignore[attr-defined]
    known = sorted(k for k in table if not k.startswith("!"))
    raise ConfigError.single(
        path, f"unknown {kind}; expected one of {', '.join(known)} or 'module:Class'", found=name, choices=known
    )


def get_algorithm(name: str, path: tuple[str | int, ...] = ("algorithms",)) -> type[Algorithm]:
    """The algorithm class registered as `name` (or `module:Class`); ConfigError at `path` if none."""
    return cast("type[Algorithm]", _lookup(name, _ALGORITHMS, "algorithm", path))


def took_no_gradient_step(algorithm: str, grad_steps: int | None) -> bool:
    """A finished run of a learning algorithm that never updated (a warm-up or burn-in longer
    than the budget): its scores are those of the untrained policy."""
    if grad_steps != 0:
        return False  # it learned, or the store predates the count
    try:
        return learns(get_algorithm(algorithm))
    except Exception:  # an algorithm that can no longer be imported: say nothing about it
        return False


def get_env(name: str, path: tuple[str | int, ...] = ("env",)) -> type[Backend]:
    """The backend class registered as `name` (or `module:Class`); ConfigError at `path` if none."""
    return cast("type[Backend]", _lookup(name, _ENVS, "env backend", path))


def algorithm_names() -> list[str]:
    load_all()
    return sorted(k for k in _ALGORITHMS if not k.startswith("!"))


def env_names() -> list[str]:
    load_all()
    return sorted(k for k in _ENVS if not k.startswith("!"))
