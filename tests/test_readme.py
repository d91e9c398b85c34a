"""The README's examples work as written."""

from __future__ import annotations

import re
from pathlib import Path

from harness import registry
from harness.testing import check_algorithm

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text[text.index(f"## {section}"):]
    body = body[: body.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_adding_an_algorithm_example_keeps_the_contract() -> None:
    (code,) = python_blocks("Adding an algorithm")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert registry.get_algorithm("scaled_vdn") is namespace["ScaledVDN"]
    check_algorithm("scaled_vdn")


def test_ci_runs_the_readme_test_command() -> None:
    text = README.read_text()
    install, test = re.findall(r"```bash\n(.*?)\n```", text[: text.index("## Concepts")], flags=re.S)
    assert install.startswith('pip install -e ".[all]" -c constraints.txt && harness run suite=zero_shot_sc2')
    ci_lines = (README.parent / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines
