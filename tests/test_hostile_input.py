"""Hostile suite files and overrides: refused quickly, with file, line and key; never a traceback."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from helpers import GOOD_SUITE as GOOD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.config import load_suite
from harness.errors import ConfigError

SECONDS = 2.0  # every answer, however hostile the input, within this on a busy 2-core machine

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def validate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = main(["validate", *argv])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    return code, captured.out + captured.err, elapsed


def write(tmp_path: Path, content: str | bytes, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


FILE_CASES: dict[str, tuple[str | bytes, list[str]]] = {
    "duplicate_top_key": (GOOD + "seeds: 3\n", ["seeds", "key 'seeds' appears twice: lines 2 and 9", ":9"]),
    "duplicate_task": (GOOD + "  game:\n    env: matrix\n", ["tasks.game", "key 'game' appears twice: lines 6 and 9"]),
    "duplicate_nested_key": (GOOD.replace("{game: nonmonotonic_3x3}", "{game: climbing, game: penalty}"),
                             ["tasks.game.args.game", "appears twice: lines 8 and 8"]),
    "alias_bomb": (GOOD + BOMB, ["aliases expand to more than", "expected a suite of reasonable size"]),
    "recursive_alias": (GOOD + "x: &x [*x]\n", ["recursive structure", ":9"]),
    "deep_flow": (GOOD + "x: " + "[" * 5000 + "]" * 5000 + "\n", ["nested more than 50 levels deep", ":9"]),
    "deep_through_aliases": (
        GOOD + "a0: &a0 [[[[[[[[[[1]]]]]]]]]]\n"
        + "".join(f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]\n" for i in range(1, 8)),
        ["nested more than 50 levels deep once aliases are expanded"]),
    "latin1": (GOOD.replace("metric: return", "description: caf\xe9\nmetric: return").encode("latin-1"),
               ["expected UTF-8 text", "0xe9", ":1"]),
    "utf16": (GOOD.encode("utf-16"), ["expected UTF-8 text, found UTF-16 text"]),
    "binary": (bytes(range(256)) * 4, ["expected UTF-8 text, found binary content"]),
    "too_big": (GOOD + "description: '" + "x" * 1_100_000 + "'\n", ["file larger than 1 MB"]),
    "too_many_values": (GOOD + "x: [" + "0," * 200_000 + "0]\n", ["more than 50000 values"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_hostile_file_refused_fast(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content, expected = FILE_CASES[case]
    path = write(tmp_path, content)
    code, output, elapsed = validate(capsys, f"suite={path}")
    assert code == 2, output
    assert str(path) in output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from: {output}"
    assert "Traceback" not in output
    assert elapsed < SECONDS, f"{case} took {elapsed:.2f}s"


def test_utf8_bom_and_merge_keys_still_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "\ufeff" + GOOD + "params:\n  '*': &base {lr: 0.01, batch_size: 8}\n  vdn:\n    <<: *base\n    lr: 0.02\n"
    path = write(tmp_path, text.encode("utf-8"))
    suite = load_suite(str(path))
    assert suite.tasks[0].params["vdn"] == {"lr": 0.02, "batch_size": 8}


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_only_regular_files(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if kind == "fifo":
        path = tmp_path / "suite.yaml"
        os.mkfifo(path)  # opening it for reading would block until a writer comes: it must not be opened
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "dir.yaml"
        path.mkdir()
    code, output, elapsed = validate(capsys, f"suite={path}")
    assert code == 2 and "not a regular file" in output and str(path) in output, output
    assert elapsed < SECONDS


def test_unreadable_yaml_in_an_override_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    code, output, _ = validate(capsys, f"suite={path}", "params.vdn={lr: 1, lr: 2}")
    assert code == 2 and "<command line>: params.vdn.lr: key 'lr' appears twice" in output, output
    bomb = "[" + ", ".join(["*c"] * 60) + "]"
    value = ("[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
             "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], " + bomb + "]")
    code, output, elapsed = validate(capsys, f"suite={path}", f"params.vdn.lr={value}")
    assert code == 2 and "<command line>: params.vdn.lr" in output and "aliases expand" in output, output
    assert elapsed < SECONDS


# ---- bounds in the schema ---------------------------------------------------------------------

BOUND_CASES = {
    "seeds=100000": "seeds: expected less than or equal to 1000",
    "seeds=[0, 4294967296]": "seeds[1]",
    "tasks.game.num_envs=100000": "tasks.game.num_envs: expected less than or equal to 4096",
    "budget.env_steps=100000000000": "budget.env_steps: expected less than or equal to 10000000000",
    "budget.eval_episodes=10000000": "budget.eval_episodes",
    "workers=100000": "workers: expected less than or equal to 4096",
    "cpus_per_run=.inf": "cpus_per_run: expected a finite number",
    "cpus_per_run=5000": "cpus_per_run: expected less than or equal to 1024",
    "checkpoint_every=.nan": "checkpoint_every: expected a finite number",
    "tasks.game.args={game: identity, n_actions: 100000}": "tasks.game.args.n_actions",
    "tasks.game.reference={random: 0, best: .inf}": "tasks.game.reference.best: expected a finite number",
    "tasks.game.reference={random: .nan, best: 1}": "tasks.game.reference.random: expected a finite number",
    "tasks.game.train=[{types: [A, B], weight: .inf}]": "tasks.game.train[0].weight: expected a finite number",
    "params.vdn.lr=-.inf": "params.vdn.lr: expected a finite number",
    "params.vdn.batch_size=1000000000000000000000": "params.vdn.batch_size: expected a number no larger than",
}


@pytest.mark.parametrize("override", sorted(BOUND_CASES))
def test_huge_or_non_finite_values_refused(override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output, elapsed = validate(capsys, f"suite={write(tmp_path, GOOD)}", override)
    assert code == 2, output
    assert f"<command line>: {BOUND_CASES[override]}" in output, output
    assert elapsed < SECONDS


def test_non_finite_in_the_file_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD.replace("{game: nonmonotonic_3x3}", "{game: two_type}") + "    train: [{types: [A, B], weight: .nan}]\n"
    code, output, _ = validate(capsys, f"suite={write(tmp_path, text)}")
    assert code == 2 and ":9: tasks.game.train[0].weight: expected a finite number, found nan" in output, output


def test_weight_must_be_positive_and_finite(tmp_path: Path) -> None:
    text = GOOD.replace("{game: nonmonotonic_3x3}", "{game: two_type}") + "    train: [{types: [A, B], weight: 0}]\n"
    with pytest.raises(ConfigError, match="weight: expected a positive finite number"):
        load_suite(str(write(tmp_path, text)))


# ---- messages point at the right place ----------------------------------------------------------

MESSAGE_CASES = {
    "tasks.no_such_task.num_envs=3": ["<command line>: tasks.no_such_task: unknown task", "game"],
    "tasks.gmae.num_envs=3": ["<command line>: tasks.gmae: unknown task", "did you mean 'game'"],
    "params.no_such_alg.lr=1": ["<command line>: params.no_such_alg: unknown algorithm"],
    "seeds.x=3": ["<command line>: seeds: expected a valid integer"],
    "tasks.game.reference.foo=1": ["<command line>: tasks.game.reference.foo: unknown key; expected one of random, best"],
}


@pytest.mark.parametrize("override", sorted(MESSAGE_CASES))
def test_override_problems_blamed_on_command_line(override: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    code, output, _ = validate(capsys, f"suite={path}", override)
    assert code == 2, output
    for fragment in MESSAGE_CASES[override]:
        assert fragment in output, output
    assert str(path) not in output.replace(f"suite={path}", "")  # no unrelated line of the file is blamed
    for tag in ("constrained-int", "function-after", "list[", "union["):
        assert tag not in output, output


def test_unknown_key_under_reference_in_file_lists_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "    reference: {random: 0, best: 1, worst: 2}\n")
    with pytest.raises(ConfigError) as info:
        load_suite(str(path))
    assert "tasks.game.reference.worst: unknown key; expected one of random, best" in str(info.value)
    assert f"{path}:9" in str(info.value)


# ---- suite names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/tmp/x", "../../x", "a/b", "a\\\\b", "..", "x y", "''"])
def test_suite_name_must_be_an_identifier(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f'name: "{name}"\n' if name != "''" else "name: ''\n")
    path.write_text(path.read_text() + GOOD)
    code, output, _ = validate(capsys, f"suite={path}")
    assert code == 2 and f"{path}:1: name: expected an identifier" in output, output


def test_suite_name_from_file_stem_must_be_an_identifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output, _ = validate(capsys, f"suite={write(tmp_path, GOOD, 'my suite.yaml')}")
    assert code == 2 and "named after its file" in output, output
    code, output, _ = validate(capsys, f"suite={write(tmp_path, GOOD, 'my-suite_2.yaml')}")
    assert code == 0, output


# ---- property: any document gets 0 or 2, quickly -------------------------------------------------

KEYS = ["name", "seeds", "budget", "budgets", "algorithms", "params", "tasks", "env", "args", "num_envs",
        "train", "test", "validation", "weight", "reference", "random", "best", "workers", "cpus_per_run",
        "game", "types", "payoff", "n_actions", "env_steps", "eval_every", "eval_episodes", "matrix", "vdn",
        "qmix", "*", "lr", "nonmonotonic_3x3", "two_type", "metric", "rollout", "../x", "<<"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(KEYS),
    st.text(max_size=20), st.sampled_from(["\u202e", "\x00", "\ud7ff", "'", '"', "&a", "*a", "!!python/name:os.system",
                                            "{", "- -", "1e999", ".nan", "-.inf", "0x10", "~"]),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=6),
    ),
    max_leaves=40,
)
VALID_BASE = {"seeds": 2, "budget": {"env_steps": 100, "eval_every": 50, "eval_episodes": 2},
              "algorithms": ["vdn"], "tasks": {"game": {"env": "matrix", "args": {"game": "nonmonotonic_3x3"}}}}


def _render(doc: object, raw_tail: str) -> str:
    import yaml

    return yaml.safe_dump(doc, allow_unicode=True, default_flow_style=None) + raw_tail


def _check_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str], docs: st.SearchStrategy[str],
                     examples: int) -> None:
    stats = {"n": 0, "slowest": 0.0, "case": ""}
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert validate(capsys, f"suite={good}")[0] == 0  # untimed: the first validate imports every backend

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(docs)
    def prop(text: str) -> None:
        path = tmp_path / "suite.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        code, output, elapsed = validate(capsys, f"suite={path}")
        assert code in (0, 2), output
        assert "Traceback" not in output
        assert elapsed < SECONDS, f"{elapsed:.2f}s for {text[:300]!r}"
        stats["n"] = int(stats["n"]) + 1
        if elapsed > float(stats["slowest"]):
            stats["slowest"], stats["case"] = elapsed, text[:200]

    prop()
    with capsys.disabled():  # shown with -s
        print(f"\n{stats['n']} documents validated; slowest {float(stats['slowest']):.3f}s: {stats['case']!r}")


def _documents() -> st.SearchStrategy[str]:
    """Random documents, and valid suites with random values grafted in, with odd raw YAML tails."""
    grafted = st.builds(lambda base, key, value: {**base, key: value} if isinstance(base, dict) else base,
                        st.just(VALID_BASE), st.sampled_from(KEYS), DOCUMENTS)
    task_grafted = st.builds(
        lambda key, value: {**VALID_BASE, "tasks": {"game": {**VALID_BASE["tasks"]["game"], key: value}}},  # type: ignore[dict-item]
        st.sampled_from(KEYS), DOCUMENTS)
    tails = st.sampled_from(["", "seeds: 3\n", "x: &a [*a]\n", "y: !!float nan\n", "name: ../../etc\n",
                             "z: !!binary aGVsbG8=\n", "w: 2001-12-14t21:59:43.10-05:00\n", "? [a, b]\n: 1\n",
                             "q: !!python/object:os.system {}\n", "k: " + "[" * 60 + "]" * 60 + "\n"])
    return st.builds(_render, st.one_of(DOCUMENTS, grafted, task_grafted), tails)


def test_any_document_validates_or_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check_documents(tmp_path, capsys, _documents(), examples=60)


@pytest.mark.slow
def test_any_document_validates_or_is_refused_many(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check_documents(tmp_path, capsys, _documents(), examples=1500)


@pytest.mark.parametrize(("override", "message"), [
    ("store=foo://x/y", "store: cannot use this database (Can't load plugin: sqlalchemy.dialects:foo)"),
    ("store=sqlite:////dev/null/x.db", "store: cannot make the folder /dev/null for the store: the path, or a folder "
                                       "above it, is a file"),
    ("checkpoint_dir={file}", "checkpoint_dir: {file} cannot be made a folder: the path, or a folder above it, is a file"),
])
def test_unusable_store_and_checkpoint_paths_are_refused_before_any_run(tmp_path: Path, override: str, message: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    extra = [] if override.startswith("store=") else [f"store=sqlite:///{tmp_path / 'ok.db'}"]
    args = ["run", "suite=matrix_games", "tasks=[identity]", "algorithms=[vdn]", "seeds=1", "budget=smoke",
            override.format(file=a_file), *extra]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"<command line>: {message.format(file=a_file)}" in err and "Traceback" not in err


def test_a_damaged_store_is_an_error_naming_it_with_a_remedy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Random bytes over a store's pages, or a file that is no database at all: exit 2 naming the
    store and what to do, never a traceback."""
    from harness.cli import main
    from harness.config import load_suite
    from harness.run.plan import plan
    from harness.run.store import Store

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = Store(url)
    store.register(plan(load_suite("matrix_games", [f"store={url}"])))  # 350 rows: several pages
    store.engine.dispose()
    raw = bytearray((tmp_path / "runs.db").read_bytes())
    raw[4096:len(raw)] = bytes((i * 97 + 13) % 256 for i in range(len(raw) - 4096))  # every page but the header
    (tmp_path / "runs.db").write_bytes(bytes(raw))
    (tmp_path / "noise.db").write_bytes(bytes(range(256)) * 64)
    for name in ("runs.db", "noise.db"):
        capsys.readouterr()
        assert main(["status", "suite=matrix_games", f"store=sqlite:///{tmp_path / name}"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"the results store sqlite:///{tmp_path / name} failed" in err and "Traceback" not in err
        assert "malformed" in err or "not an SQLite database" in err


def test_validate_imports_nothing_a_suite_names_unless_allowed(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A factory or 'module:Class' outside the trusted packages is refused by name at validate:
    not imported, not called. allow_imports (in the file or on the command line) lets it in."""
    import sys

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.yaml"
    shell = f'  shell:\n    env: pettingzoo\n    args: {{env: "os:system", kwargs: {{command: "touch {marker}"}}}}\n'
    path.write_text(GOOD.replace("algorithms: [vdn]", "algorithms: ['antigravity:X']") + shell)
    assert main(["validate", f"suite={path}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "algorithms[0]: module 'antigravity' is not allowed to be imported" in err
    assert "tasks.shell.args.env: module 'os' is not allowed to be imported" in err
    assert "antigravity" not in sys.modules and not marker.exists()
    assert main(["validate", f"suite={path}", "tasks=[game]", "algorithms=[vdn, 'plugins:CrashingVDN']"]) == 2
    assert "module 'plugins' is not allowed" in capsys.readouterr().err
    assert main(["validate", f"suite={path}", "tasks=[game]", "algorithms=[vdn, 'plugins:CrashingVDN']",
                 "allow_imports=[plugins]"]) == 0
