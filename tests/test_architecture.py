"""The package layout's rules, checked on the source: every module imports on its own, and the
import graph of harness/, algorithms/ and scenarios/ has no cycle, counting the imports inside
functions (a function-level import hides a cycle from Python, not from the reader)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "algorithms", "scenarios")


def module_names() -> dict[str, Path]:
    """Every module of the three packages (a package as its __init__), by dotted name."""
    names = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in it: `import a.b`, `from a import b` (b a
    module) and `from a.b import c` (c a name) all count as importing the module they reach."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_hand_made_cycle_and_nothing_in_a_chain() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert sorted(cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})) == [["a", "b"], ["c", "d"]]


def test_the_import_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n    from .c import thing\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py", "pkg.c": pkg / "c.py"}
    assert imported_modules(pkg / "a.py", "pkg.a", modules) == {"pkg.b", "pkg.c"}


def test_no_import_cycle_in_the_project() -> None:
    found = cycles(import_graph())
    assert not found, "modules that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    """Each module imported first thing in its own interpreter would be slow (torch and JAX
    start-up); one fresh interpreter importing all of them finds what is broken, and the graph
    having no cycle means no module depends on another having been imported before it."""
    names = [n for n in module_names() if not n.endswith("__main__")]
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_readme_layout_names_every_module_of_the_core() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("Layout ("):]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    unlisted = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "harness").rglob("*.py"))
                if path.name not in ("__init__.py", "__main__.py") and path.name not in layout]
    assert not unlisted, f"README's layout does not mention {unlisted}"


def test_the_core_reaches_algorithms_and_environments_only_through_the_registry() -> None:
    """harness/ names no module of algorithms/ or scenarios/ but in registry.py: a backend or an
    algorithm is found by name, so the core works the same for the built-ins and for plugins."""
    graph = import_graph()
    reaching = {module: sorted(t for t in targets if t.split(".")[0] in ("algorithms", "scenarios"))
                for module, targets in graph.items() if module.split(".")[0] == "harness"}
    offenders = {m: t for m, t in reaching.items() if t and m != "harness.registry"}
    assert not offenders, f"core modules importing plugins directly: {offenders}"
