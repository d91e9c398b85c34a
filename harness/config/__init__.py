"""Suite files: the schema (`schema`), command-line overrides (`overrides`), validation that
reports every problem with file, line and key (`problems`, `yaml_lines`), the resolved suite
(`suite`), tuning records (`tuned`) and the loader that puts them together (`resolve`).

A suite is checked completely before any run starts. Every problem is reported with the
file, the line, the key path, what was expected and what was found, plus the closest valid
key when a name looks like a typo. The names below are the package's public API.
"""

from harness.config.overrides import parse_value
from harness.config.resolve import build_config, load_suite, suite_path
from harness.config.schema import COMMAND_LINE, METRICS, PROFILES, SPLITS
from harness.config.suite import (
    Claim,
    Composition,
    RaySettings,
    Suite,
    Task,
    default_checkpoint_dir,
    default_store,
)
from harness.config.tuned import TUNING_DIR, tuned_params_path

__all__ = [
    "COMMAND_LINE", "METRICS", "PROFILES", "SPLITS", "TUNING_DIR", "Claim", "Composition", "RaySettings", "Suite",
    "Task", "build_config", "default_checkpoint_dir", "default_store", "load_suite", "parse_value", "suite_path",
    "tuned_params_path",
]
