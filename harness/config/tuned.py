"""The records `harness tune` writes (runs/tuning/<suite>/<algorithm>.json) and laying their
best parameters over a suite's (`params=tuned`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness import registry
from harness.config.suite import Suite
from harness.errors import ConfigError

TUNING_DIR = Path("runs/tuning")  # harness tune writes <suite>/<algorithm>.json here


def tuned_params_path(suite_name: str, algorithm: str) -> Path:
    return TUNING_DIR / suite_name / f"{algorithm}.json"


def apply_tuned_params(suite: Suite) -> None:
    """Lay each algorithm's best `harness tune` parameters over its params on every task.
    An algorithm without a record keeps its params and is flagged as untuned on the leaderboard."""
    import json

    suite.tuned_params = {}
    claimed = [a for t in suite.tasks for a in t.claimed if a not in suite.algorithms]
    for algorithm in dict.fromkeys([*suite.algorithms, *claimed]):
        path = tuned_params_path(suite.name, algorithm)
        if not path.is_file():
            suite.tuned_params[algorithm] = None
            continue
        try:
            record = json.loads(path.read_text())
            params = dict(record["params"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError.single(("params",), f"unreadable tuning record ({exc}); expected the JSON "
                                     "written by harness tune", found=str(path), file=str(path)) from None
        known = {f.name for f in dataclasses.fields(registry.get_algorithm(suite.plugin(algorithm)).Config)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError.single(("params", unknown[0]), f"not a parameter of {algorithm}; expected one of "
                                     f"{', '.join(sorted(known))}", found=unknown[0], file=str(path))
        for task in suite.tasks:
            for table in (task.params, task.claimed):
                if algorithm in table:
                    table[algorithm] = {**table[algorithm], **params}
        suite.tuned_params[algorithm] = {**record, "file": str(path)}
