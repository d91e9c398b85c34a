from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import settings

# tox (and so CI) runs property tests with a fixed example sequence, so a red CI is always
# reproducible; a bare `pytest` keeps exploring new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SMOKE_SUITE = """\
name: {name}
metric: return
seeds: {seeds}
budget: smoke
budgets:
  smoke: {{env_steps: {env_steps}, eval_every: 128, eval_episodes: 4}}
algorithms: {algorithms}
allow_imports: [plugins]  # tests/plugins.py: the misbehaving algorithms
workers: {workers}
store: sqlite:///{dir}/store.db
checkpoint_dir: {dir}/checkpoints
params:
  "*": {{attn_embed: 16, attn_heads: 2, rnn_hidden: 16, epsilon_anneal_steps: 200, target_update_episodes: 20,
         batch_size: 16, buffer_size: 200}}
tasks:
  climbing:
    env: matrix
    args: {{game: climbing}}
    num_envs: 8
  two_type:
    env: matrix
    args: {{game: two_type}}
    num_envs: 8
    train: [{{types: [A, B]}}, {{types: [B, A]}}]
    test: [{{types: [B, B]}}]
"""


@pytest.fixture
def smoke_suite(tmp_path: Path):
    """Factory: write a small two-task matrix suite (store and checkpoints inside tmp_path)."""

    def make(algorithms: str = "[iql, vdn, qmix]", seeds: int = 2, workers: int = 0, name: str = "smoke",
             env_steps: int = 256) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(SMOKE_SUITE.format(name=name, seeds=seeds, algorithms=algorithms,
                                                           workers=workers, dir=tmp_path, env_steps=env_steps)))
        return path

    return make


def _postgres_bin() -> Path | None:
    """Debian keeps the server programs out of PATH, under /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres():
    """A real, throwaway PostgreSQL server (unix socket only); yields `url(database)`, which
    creates the database and returns its SQLAlchemy URL. Skipped where the server or psycopg
    is not installed."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) are not installed")
    psycopg = pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))  # not under pytest's 0700 root: the server user must reach it
    as_server_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, user="postgres")
        as_server_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run([*as_server_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "harness"],
                   check=True, capture_output=True)
    subprocess.run([*as_server_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                    "-o", f"-p 5432 -k {root} -c listen_addresses=''", "start"], check=True, capture_output=True)
    where = f"host={root}&port=5432"

    def url(database: str) -> str:
        with psycopg.connect(f"host={root} port=5432 user=harness dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return f"postgresql+psycopg://harness@/{database}?{where}"

    try:
        yield url
    finally:
        subprocess.run([*as_server_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
