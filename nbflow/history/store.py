"""The run database: one SQLite file that records every run and its tasks.

Where it is (:func:`database_path`), first match wins:

1. ``NBFLOW_HISTORY=0`` (or ``false``, ``no``, ``off``): nowhere, history is off;
2. ``NBFLOW_HOME`` set: ``$NBFLOW_HOME/runs.db``;
3. inside ``with located(DIR):`` (``nbflow run SPEC`` passes ``.nbflow`` beside the
   spec): ``DIR/runs.db``;
4. otherwise ``./.nbflow/runs.db`` in the working directory (a notebook run by
   ``nbflow run`` works in the notebook's folder, so it is beside the notebook).

``NBFLOW_HISTORY`` and ``NBFLOW_HOME`` are read when a run starts; once
:mod:`nbflow.config` has ``history`` and ``home`` settings, those are read instead
(the same variables, plus ``config.set``).

Two tables, written once per run when it ends (see :mod:`nbflow.history.recorder`)::

    runs(run_id, flow, status, started, ended, params, cwd)
    tasks(run_id, position, task, state, key, key_parts, params, upstreams, started,
          ended, attempts, where_, branches, result_hash, preview, error)
    modules(digest, details)

``params``, ``key_parts`` and ``upstreams`` are JSON text. ``modules`` keeps each local
module version a key part names (``"module helpers": digest``): its file and its
definitions with their lines, so that a later process can say which definition changed
(``nbflow why``). The connection is opened
per call, in WAL mode with ``synchronous=NORMAL``: a run's record costs one short
transaction and no fsync.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import NbflowError
from ..writer_thread import WriterThread

__all__ = ["HistoryError", "RunStore", "UnknownRunError", "database_path", "enabled",
           "located"]

_OFF = ("0", "false", "no", "off")
_located: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "nbflow_history_dir", default=None)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, status TEXT NOT NULL,
    started REAL, ended REAL, params TEXT NOT NULL, cwd TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL, position INTEGER NOT NULL, task TEXT NOT NULL,
    state TEXT NOT NULL, key TEXT, key_parts TEXT NOT NULL, params TEXT NOT NULL,
    upstreams TEXT NOT NULL, started REAL, ended REAL, attempts INTEGER, where_ TEXT,
    branches INTEGER, result_hash TEXT, preview TEXT, error TEXT,
    PRIMARY KEY (run_id, task)
);
CREATE INDEX IF NOT EXISTS tasks_key ON tasks(key);
CREATE TABLE IF NOT EXISTS modules (
    digest TEXT PRIMARY KEY, details TEXT NOT NULL
);
"""

RUN_COLUMNS = ("run_id", "flow", "status", "started", "ended", "params", "cwd")
TASK_COLUMNS = ("run_id", "position", "task", "state", "key", "key_parts", "params",
                "upstreams", "started", "ended", "attempts", "where_", "branches",
                "result_hash", "preview", "error")
_JSON = ("params", "key_parts", "upstreams")


class HistoryError(NbflowError):
    """The run history cannot be read (no database, or a damaged one)."""


class UnknownRunError(HistoryError, KeyError):
    """No recorded run matches an id (or an id prefix matches several)."""

    def __init__(self, ref: str, problem: str, path: Path) -> None:
        self.ref, self.problem, self.path = ref, problem, path
        super().__init__(f"run {ref!r} {problem} in {path}. List the runs with `nbflow runs`.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.ref, self.problem, self.path))

    def __str__(self) -> str:
        return str(self.args[0])


def _setting(name: str) -> Any:
    """Setting ``name`` from :mod:`nbflow.config` when it has one (so ``config.set`` works),
    else the ``NBFLOW_<NAME>`` environment variable; read at use time."""
    from .. import config

    if name in config.DEFAULTS:
        return config.get(name)
    return os.environ.get("NBFLOW_" + name.upper())


def enabled() -> bool:
    """False when the ``history`` setting (``NBFLOW_HISTORY=0``) turns history off."""
    value = _setting("history")
    if isinstance(value, str):
        return value.strip().lower() not in _OFF
    return value is None or bool(value)


def database_path() -> Path:
    """Where the run database is (the module docstring gives the rule)."""
    home = _setting("home")
    if home:
        return Path(home).expanduser() / "runs.db"
    base = _located.get()
    if base is not None:
        return base / "runs.db"
    return Path.cwd() / ".nbflow" / "runs.db"


@contextlib.contextmanager
def located(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Record the runs started inside the block in ``directory/runs.db`` (unless
    ``NBFLOW_HOME`` is set: it wins)."""
    token = _located.set(Path(directory))
    try:
        yield
    finally:
        _located.reset(token)


#: ended runs waiting to be recorded before the next run's end waits for them
_MAX_PENDING = 64


#: the writer of every recorder of this process: a run's end never waits for its record
#: (hashing results, writing SQLite); reads of the database (:meth:`RunStore._connect`)
#: wait for it first, so a run is in the history as soon as anyone looks
writer = WriterThread("nbflow-history", max_pending=_MAX_PENDING)


class RunStore:
    """The run database at ``path`` (``database_path()`` by default)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else database_path()

    @contextlib.contextmanager
    def _connect(self, create: bool) -> Iterator[sqlite3.Connection]:
        if not create:  # a read: the runs being recorded first
            writer.flush()
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            msg = (f"no run history at {self.path}: no run was recorded there yet (set "
                   "NBFLOW_HOME or pass --db to read another)")
            raise HistoryError(msg)
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            if create:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            with conn:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"the run history {self.path} cannot be used: {exc}") from exc
        finally:
            conn.close()

    # -- writing ---------------------------------------------------------------------------

    def record(self, run: dict[str, Any], tasks: Sequence[dict[str, Any]],
               modules: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Write one run and its tasks (replacing an earlier record of the same run id), and
        the local module versions their key parts name (digest -> details)."""
        run_row = [_cell(k, run.get(k)) for k in RUN_COLUMNS]
        task_rows = [[_cell(k, t.get(k)) for k in TASK_COLUMNS] for t in tasks]
        module_rows = [(d, json.dumps(v, default=repr)) for d, v in (modules or {}).items()]
        with self._connect(create=True) as conn:
            conn.execute("DELETE FROM tasks WHERE run_id = ?", (run["run_id"],))
            conn.execute(f"INSERT OR REPLACE INTO runs VALUES ({_marks(RUN_COLUMNS)})", run_row)
            conn.executemany(f"INSERT INTO tasks VALUES ({_marks(TASK_COLUMNS)})", task_rows)
            conn.executemany("INSERT OR IGNORE INTO modules VALUES (?, ?)", module_rows)

    # -- reading ---------------------------------------------------------------------------

    def runs(self, flow: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Recorded runs, newest first (of ``flow`` only, when given)."""
        sql = "SELECT * FROM runs"
        args: list[Any] = []
        if flow is not None:
            sql += " WHERE flow = ?"
            args.append(flow)
        sql += " ORDER BY started DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._connect(create=False) as conn:
            return [_decode(row) for row in conn.execute(sql, args)]

    def run(self, ref: str) -> dict[str, Any]:
        """One run by id, unique id prefix, or ``-1`` (the latest), ``-2``, ...

        Raises :class:`UnknownRunError` when none (or several) match.
        """
        if ref.startswith("-") and ref[1:].isdigit() and int(ref[1:]) > 0:
            rows = self.runs(limit=int(ref[1:]))
            if len(rows) < int(ref[1:]):
                raise UnknownRunError(ref, f"does not exist ({len(rows)} runs recorded)",
                                      self.path)
            return rows[-1]
        with self._connect(create=False) as conn:
            found = conn.execute("SELECT * FROM runs WHERE run_id LIKE ? ORDER BY started",
                                (ref.replace("%", "").replace("_", "") + "%",)).fetchall()
        if not found:
            raise UnknownRunError(ref, "is not recorded", self.path)
        if len(found) > 1 and not any(r["run_id"] == ref for r in found):
            ids = ", ".join(r["run_id"] for r in found[:5])
            raise UnknownRunError(ref, f"matches several runs ({ids})", self.path)
        exact = [r for r in found if r["run_id"] == ref]
        return _decode(exact[0] if exact else found[0])

    def tasks(self, run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The task records of ``run_ids`` (all runs when None), by run then position."""
        out: list[dict[str, Any]] = []
        if run_ids is not None and not run_ids:
            return out
        with self._connect(create=False) as conn:
            if run_ids is None:
                rows = conn.execute("SELECT * FROM tasks ORDER BY run_id, position")
                return [_decode(row) for row in rows]
            for chunk in _chunks(run_ids):
                out.extend(_decode(row) for row in conn.execute(
                    f"SELECT * FROM tasks WHERE run_id IN ({_marks(chunk)})", chunk))
        order = {run_id: i for i, run_id in enumerate(run_ids)}
        out.sort(key=lambda t: (order.get(t["run_id"], 0), t["position"]))
        return out

    def state_counts(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``run_id -> {state: number of tasks}``."""
        if not run_ids:
            return {}
        out: dict[str, dict[str, int]] = {}
        with self._connect(create=False) as conn:
            for chunk in _chunks(run_ids):
                for row in conn.execute(f"SELECT run_id, state, COUNT(*) FROM tasks WHERE "
                                        f"run_id IN ({_marks(chunk)}) GROUP BY run_id, state",
                                        chunk):
                    out.setdefault(row[0], {})[row[1]] = row[2]
        return out

    def last_hashes(self, keys: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """``key -> (result_hash, preview)`` as last recorded for tasks with those cache keys
        (a cached result is the one recorded when it was computed: no need to hash it again)."""
        if not keys or not self.path.exists():
            return {}
        out: dict[str, tuple[str, str | None]] = {}
        with self._connect(create=True) as conn:  # another process may be making it
            for chunk in _chunks(keys):
                for row in conn.execute(f"SELECT key, result_hash, preview FROM tasks WHERE "
                                        f"key IN ({_marks(chunk)}) AND result_hash IS NOT "
                                        f"NULL ORDER BY rowid", chunk):
                    out[row[0]] = (row[1], row[2])
        return out

    def modules(self, digests: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The recorded local module versions among ``digests``: digest -> ``{"path",
        "defs"}`` (see :func:`nbflow.code_sources.module_details`)."""
        out: dict[str, dict[str, Any]] = {}
        if not digests:
            return out
        with self._connect(create=True) as conn:  # a database made before this table
            for chunk in _chunks(digests):
                for row in conn.execute(f"SELECT digest, details FROM modules WHERE digest "
                                        f"IN ({_marks(chunk)})", chunk):
                    out[row[0]] = json.loads(row[1])
        return out

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    """``items`` in lists of at most ``size`` (SQLite caps the ``?`` of one statement)."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _marks(columns: Sequence[Any]) -> str:
    return ", ".join("?" * len(columns))


def _cell(column: str, value: Any) -> Any:
    if column in _JSON:
        return json.dumps(value if value is not None else ({} if column != "upstreams" else []),
                          allow_nan=False, default=repr)
    return value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for column in _JSON:
        if column in out and isinstance(out[column], str):
            out[column] = json.loads(out[column])
    return out
