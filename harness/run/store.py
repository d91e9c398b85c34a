"""Results store: runs and their evaluation rows in any SQLAlchemy database.

Only the coordinating process writes. A run's evaluation rows and its `done` status are
written in one transaction, so a run is either complete in the store or absent from it,
and re-running a suite can never duplicate rows.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness.errors import ConfigError, HarnessError

STATUSES = ("pending", "running", "interrupted", "done", "failed")

metadata = sa.MetaData()

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("suite", sa.String(200), nullable=False, index=True),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("algorithm", sa.String(200), nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("budget", sa.Text, nullable=False),
    sa.Column("task_config", sa.Text, nullable=False),
    sa.Column("metric", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("reason", sa.Text),
    sa.Column("env_steps", sa.BigInteger, default=0),
    sa.Column("grad_steps", sa.BigInteger, default=0),
    sa.Column("seconds", sa.Float, default=0.0),
    sa.Column("attempts", sa.Integer, default=0),
    sa.Column("owner", sa.String(200)),
    sa.Column("versions", sa.Text),
    sa.Column("timings", sa.Text),  # JSON: wall seconds by phase
    sa.Column("created_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
)

evals_table = sa.Table(
    "evals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),  # "curve" (during training) or "absolute"
    sa.Column("env_steps", sa.BigInteger, nullable=False),
    sa.Column("split", sa.String(20), nullable=False),
    sa.Column("composition", sa.String(200), nullable=False),
    sa.Column("metric", sa.String(50), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("episodes", sa.Integer, nullable=False),
    sa.UniqueConstraint("run_id", "kind", "env_steps", "split", "composition", "metric", name="one_row_per_eval"),
)


@dataclass
class RunResult:
    """What a worker sends back to the coordinator when a run ends (any way)."""

    run_id: str
    status: str  # done | failed | interrupted
    reason: str | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)
    env_steps: int = 0
    grad_steps: int = 0
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds by phase (see runner.PhaseClock)


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the coordinator that marked a run `running` still exists (same host only)."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell for another machine: leave it alone
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


RACE_MESSAGES = ("already exists", "locked", "duplicate key", "duplicate column", "UNIQUE constraint failed")


def _retry_races(write: Callable[[], None], attempts: int = 10) -> None:
    """Run `write` (one transaction), again if it lost a race with another process writing
    the same rows or tables: each new attempt is a fresh transaction that sees the winner's
    work. Any other database error is raised at once."""
    for attempt in range(attempts):
        try:
            write()
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
            message = str(exc.orig)
            if not any(m in message for m in RACE_MESSAGES) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _create_tables(engine: sa.Engine) -> None:
    """Create the tables unless they exist. Two processes opening a new store at once (a
    `harness status` while `harness run` starts) can both see no table and both try to
    create it: the loser gets "already exists", or "database is locked" when SQLite refuses to
    upgrade its read to a write rather than deadlock (no busy wait helps there). PostgreSQL
    reports the same race as DuplicateTable, or as a unique violation on its catalogue of row
    types ("duplicate key ... pg_type_typname_nsp_index")."""
    _retry_races(lambda: metadata.create_all(engine))
    _retry_races(lambda: _add_missing_columns(engine))


def _add_missing_columns(engine: sa.Engine) -> None:
    """Stores made by an older harness lack the columns added since (nullable, so old rows read
    as NULL): add them, so a suite can go on in the store it started in."""
    present = {c["name"] for c in sa.inspect(engine).get_columns(runs_table.name)}
    missing = [c for c in runs_table.columns if c.name not in present]
    with engine.begin() as conn:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            conn.execute(sa.text(f'ALTER TABLE {runs_table.name} ADD COLUMN "{column.name}" {kind}'))


# SQLite's words for a store that no retry can fix, and what the user can do about each.
_STORE_FAILURES = {
    "malformed": "the file is damaged: restore it from a backup, or start a new one with another store=",
    "not a database": "this file is not an SQLite database: check store=",
    "disk is full": "the disk is full: free some space and run the same command again",
    "readonly": "the file or its folder is read-only: fix the permissions, or choose another store=",
}


class StoreFailed(HarnessError):
    """A store that can no longer be read or written (see _STORE_FAILURES)."""


def _unusable_store(url: str, context: Any) -> None:
    """SQLAlchemy's handle_error hook: a damaged, full or read-only store becomes an error that
    names it and says what to do (exit 2), not a traceback. Anything else (a lock held by
    another coordinator, which the callers retry) passes through unchanged."""
    text = str(context.original_exception).lower()
    for words, remedy in _STORE_FAILURES.items():
        if words in text:
            shown = sa.engine.make_url(url).render_as_string(hide_password=True)
            raise StoreFailed(f"the results store {shown} failed ({context.original_exception}): {remedy}")


def make_folder(folder: Path) -> str | None:
    """mkdir -p `folder`: None when it exists or was made, else why not in words (EEXIST from
    mkdir -p means a file is in the way). Shared by the store's folder and the checkpoint folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):
            return "the path, or a folder above it, is a file"
        return exc.strerror or str(exc)
    return None


def _make_parent(file: Path, url: str) -> None:
    """The store file's folder, made if missing; a path through a file or a read-only place is
    the user's to fix, named here rather than found by SQLite later."""
    why = make_folder(file.parent)
    if why:
        raise ConfigError.single(("store",), f"cannot make the folder {file.parent} for the store: {why}", found=url)
    if file.exists() and not file.is_file():
        raise ConfigError.single(("store",), f"{file} is not a regular file; expected a path for an SQLite file",
                                 found=url)
    if not os.access(file.parent, os.W_OK):
        raise ConfigError.single(("store",), f"cannot write in {file.parent}", found=url)


class Store:
    """A results store. `create=False` (commands that only read: status, report, show) opens an
    existing store only: a mistyped URL is an error naming it, not a new empty store whose
    suite looks unstarted."""

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise ConfigError.single(("store",), "expected an SQLAlchemy URL such as sqlite:///runs/x.db", found=url) from None
        file = parsed.database if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:") else None
        if file is not None and not create and not Path(file).is_file():
            raise ConfigError.single(("store",), f"no results store at {file}: nothing has run with this store "
                                     "(check store=, or run the suite first)", found=url)
        if file is not None:
            _make_parent(Path(file), url)
        try:
            self.engine = sa.create_engine(url, future=True)
        except (sa.exc.NoSuchModuleError, ImportError) as exc:  # an unknown dialect, or its driver is missing
            raise ConfigError.single(("store",), f"cannot use this database ({exc}); expected sqlite:///PATH.db or "
                                     "postgresql+psycopg://USER@HOST/DB (with the postgres extra)", found=url) from None
        if parsed.drivername.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        sa.event.listen(self.engine, "handle_error", functools.partial(_unusable_store, url))
        try:
            if create:
                _create_tables(self.engine)
            elif not sa.inspect(self.engine).has_table(runs_table.name):
                raise ConfigError.single(("store",), "this database holds no harness results (no runs table): "
                                         "check store=, or run the suite first", found=url)
            else:  # an older harness's store: the columns added since, so reading it works
                _retry_races(lambda: _add_missing_columns(self.engine))
        except sa.exc.DBAPIError as exc:  # unreachable server, refused login, no permission, ...
            raise ConfigError.single(("store",), f"cannot open the results store ({exc.orig})", found=url) from None

    # ---- writing (coordinator only) ----------------------------------------------------------
    def register(self, specs: Iterable[Any]) -> None:
        """Insert planned runs that the store does not know yet, as pending. Two coordinators
        starting the same suite together may both find a run unknown; the one whose insert
        comes second hits the unique run id and tries again, finding it known."""
        specs = list(specs)

        def insert_unknown() -> None:
            with self.engine.begin() as conn:
                known = set(conn.execute(sa.select(runs_table.c.run_id).where(
                    runs_table.c.run_id.in_([s.run_id for s in specs]))).scalars())
                rows = [
                    {
                        "run_id": s.run_id, "suite": s.suite, "task": s.task, "algorithm": s.algorithm,
                        "seed": s.seed, "params": json.dumps(s.params, sort_keys=True),
                        "budget": json.dumps(s.budget, sort_keys=True),
                        "task_config": json.dumps(s.task_config, sort_keys=True), "metric": s.metric,
                        "status": "pending", "attempts": 0, "created_at": time.time(),
                    }
                    for s in specs if s.run_id not in known
                ]
                if rows:
                    conn.execute(runs_table.insert(), rows)

        _retry_races(insert_unknown)

    def recover_stale(self, other_hosts: bool = False) -> int:
        """Runs left `running` by a coordinator that no longer exists become `interrupted`.
        Another machine's coordinator cannot be checked from here: `other_hosts` says the user
        knows those are gone too."""
        here = socket.gethostname()
        with self.engine.begin() as conn:
            stale = [r.run_id for r in conn.execute(
                sa.select(runs_table.c.run_id, runs_table.c.owner).where(runs_table.c.status == "running"))
                if not _owner_alive(r.owner) or (other_hosts and (r.owner or "").rpartition(":")[0] != here)]
            if stale:
                conn.execute(runs_table.update().where(runs_table.c.run_id.in_(stale)).values(
                    status="interrupted", reason="coordinator stopped while the run was in progress"))
        return len(stale)

    def claim(self, run_id: str, retry_failed: bool = False) -> bool:
        """Take a run for this coordinator just before dispatching it. The conditional update
        is atomic, so coordinators sharing a store (several machines on one PostgreSQL) split
        a suite between them instead of each running all of it; False: another has it or it
        finished meanwhile."""
        takeable = ["pending", "interrupted", *(["failed"] if retry_failed else [])]
        with self.engine.begin() as conn:
            taken = conn.execute(runs_table.update().where(
                runs_table.c.run_id == run_id, runs_table.c.status.in_(takeable)).values(
                status="running", owner=owner_tag(), reason=None)).rowcount
        return taken == 1

    def release_owned(self, reason: str) -> int:
        """Runs this coordinator still holds as `running` (claimed but never started, or not
        settled when it was interrupted) become `interrupted`, for the next invocation."""
        with self.engine.begin() as conn:
            return conn.execute(runs_table.update().where(
                runs_table.c.status == "running", runs_table.c.owner == owner_tag()).values(
                status="interrupted", reason=reason)).rowcount

    def mark_running(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(runs_table.update().where(runs_table.c.run_id == run_id).values(
                status="running", owner=owner_tag(), started_at=time.time(),
                attempts=runs_table.c.attempts + 1, reason=None))

    def mark(self, run_ids: Iterable[str], status: str, reason: str | None = None) -> None:
        assert status in STATUSES
        with self.engine.begin() as conn:
            conn.execute(runs_table.update().where(runs_table.c.run_id.in_(list(run_ids))).values(
                status=status, reason=reason))

    def finish(self, result: RunResult) -> None:
        """Record a run's outcome; for `done`, its evaluation rows in the same transaction."""
        with self.engine.begin() as conn:
            conn.execute(evals_table.delete().where(evals_table.c.run_id == result.run_id))
            if result.status == "done" and result.evals:
                conn.execute(evals_table.insert(), [{"run_id": result.run_id, **row} for row in result.evals])
            conn.execute(runs_table.update().where(runs_table.c.run_id == result.run_id).values(
                status=result.status, reason=result.reason, env_steps=result.env_steps,
                grad_steps=result.grad_steps, seconds=result.seconds,
                versions=json.dumps(result.versions, sort_keys=True),
                timings=json.dumps(result.timings, sort_keys=True), finished_at=time.time()))

    # ---- reading ----------------------------------------------------------------------------
    def runs(self, suite: str | None = None, run_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        query = sa.select(runs_table)
        if suite is not None:
            query = query.where(runs_table.c.suite == suite)
        if run_ids is not None:
            query = query.where(runs_table.c.run_id.in_(list(run_ids)))
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query.order_by(runs_table.c.task, runs_table.c.algorithm, runs_table.c.seed))]
        for r in rows:
            for key in ("params", "budget", "task_config", "versions", "timings"):
                r[key] = json.loads(r[key]) if r[key] else {}
            if r["status"] == "running" and not _owner_alive(r["owner"]):
                # Its coordinator is gone (killed): it resumes from its checkpoint next time, as
                # the next `harness run` will record; say so now rather than "running".
                r["status"], r["reason"] = "interrupted", "its coordinator stopped while the run was in progress"
        return rows

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        ids = list(run_ids)
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(runs_table.c.run_id, runs_table.c.status).where(runs_table.c.run_id.in_(ids))).all())

    def evals(self, run_ids: Iterable[str], kind: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(evals_table).where(evals_table.c.run_id.in_(list(run_ids)))
        if kind is not None:
            query = query.where(evals_table.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(evals_table.c.id))]

    def throughput(self, task_config: dict[str, Any], algorithm: str) -> float | None:
        """Env steps per second of finished runs of this algorithm on the same env (for ETAs)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs_table.c.env_steps, runs_table.c.seconds, runs_table.c.task_config).where(
                runs_table.c.status == "done", runs_table.c.algorithm == algorithm)).all()
        env = task_config.get("env")
        steps = [(r.env_steps, r.seconds) for r in rows if json.loads(r.task_config).get("env") == env and r.seconds]
        if not steps:
            return None
        return sum(s for s, _ in steps) / sum(t for _, t in steps)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `harness status` read while a suite is writing. The busy timeout comes first so
    # that switching a new file to WAL waits for a process doing the same instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
