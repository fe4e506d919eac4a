"""The observer that records a run in the run database when it ends.

Every flow adds one to its runs (``Recorder.from_config()`` in ``Flow._start``),
unless ``NBFLOW_HISTORY=0``. It asks only for run events
(``wants_task_events = False``: the scheduler then builds no task view per state
change for it) and ignores everything until the run's final event: then it reads the run's task views once and writes one transaction, so
recording costs O(tasks) per run, not per event. A problem while recording (an
unwritable folder, a locked or damaged database, a result that cannot be read)
is a logged warning; the run is never affected.

What each task's record holds:

- ``key`` (its cache key) and ``key_parts``: ``code`` (the code's key), ``params``
  (the parameters' key), ``upstreams`` (each upstream's key), and the labelled parts
  of ``Task.key_parts`` (``"package pandas": "2.2.3"``, ``"module helpers": hash``,
  ``"function 'clean'": hash``, ``"global 'THRESHOLD'": hash``), or ``extra`` (the
  text of ``key_extra()``) for a task without them; see :func:`key_parts`;
- ``state``, ``started``/``ended``, ``attempts``, ``where_`` (where it ran), ``branches``;
- ``result_hash``: blake2b of the result's cloudpickle (of its ``repr`` when it does
  not pickle), and ``preview``, a short ``repr``. A ``cached`` result keeps the hash
  recorded when it was computed. Results on a remote executor (dask) stay there:
  they get no hash.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import reprlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..events import Event, RunEvent
from ..jsonvalues import jsonable
from ..states import OK
from .store import RunStore, database_path, enabled, writer

if TYPE_CHECKING:
    from ..plan import PlannedTask, Plan
    from ..run import Run
    from ..views import TaskView

__all__ = ["Recorder", "key_parts", "module_versions", "result_digest", "run_params"]

logger = logging.getLogger(__name__)

#: the characters of a result's ``repr`` kept as its preview
PREVIEW_CHARS = 200
#: a parameter whose JSON is longer than this is recorded as a short ``repr``
PARAM_CHARS = 1000
_RUN_FINAL = frozenset({"succeeded", "failed", "cancelled"})
#: the label prefix of a local module among a task's key parts (``"module helpers"``)
MODULE = "module "

_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_CHARS
_repr.maxother = PREVIEW_CHARS


class Recorder:
    """Observer that writes its run to the run database once the run ends.

    Parameters
    ----------
    path
        The database file (default: :func:`~nbflow.history.store.database_path`,
        resolved when the recorder is made, so when the run starts).
    """

    #: only run events: no task's state change costs anything here
    wants_task_events = False

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.store = RunStore(path if path is not None else database_path())
        self.run: Run | None = None

    @classmethod
    def from_config(cls) -> Recorder | None:
        """A recorder for the run database, or None when ``NBFLOW_HISTORY=0``."""
        return cls() if enabled() else None

    def bind(self, run: Run) -> None:
        """The run this recorder writes (set before it starts)."""
        self.run = run

    def __call__(self, events: Sequence[Event]) -> None:
        run = self.run
        if run is None:
            return
        for event in events:
            if (isinstance(event, RunEvent) and event.run_id == run.id
                    and event.status in _RUN_FINAL):
                # off the run's end: hashing results and writing SQLite wait for no one
                writer.put(functools.partial(self.write, run, event.status, event.time))

    def write(self, run: Run, status: str, ended: float) -> bool:
        """Record ``run`` as ended with ``status``, and write its lineage beside its disk
        cache (:func:`~nbflow.history.lineage.write_beside_cache`); False (and a warning)
        if recording failed."""
        try:
            record, tasks = snapshot(run, status, ended, self.store)
            self.store.record(record, tasks, module_versions(tasks))
        except Exception as exc:
            logger.warning("nbflow history: run %s of flow %r was not recorded in %s: %s",
                           run.id, run.flow, self.store.path, exc)
            return False
        from .lineage import write_beside_cache

        write_beside_cache(run)
        return True

    def __repr__(self) -> str:
        return f"Recorder({str(self.store.path)!r})"


def snapshot(run: Run, status: str, ended: float,
             store: RunStore) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's record and its task records, as :meth:`RunStore.record` takes them."""
    views = run.tasks
    record = {"run_id": run.id, "flow": run.flow, "status": status, "started": run.started,
              "ended": ended, "params": run_params(run.plan), "cwd": os.getcwd()}
    keys = {name: view.key for name, view in views.items()}
    cached_keys = [v.key for v in views.values() if v.state == "cached" and v.key]
    known = store.last_hashes(cached_keys) if cached_keys else {}
    tasks = []
    for pt in run.plan.tasks:
        view = views.get(pt.name)
        if view is None:
            continue
        digest: tuple[str | None, str | None] = (None, None)
        if view.state in OK:
            if view.state == "cached" and view.key in known:
                digest = known[view.key]
            elif not _remote(run, pt):
                digest = _result_digest(run, pt.name)
        tasks.append({
            "run_id": run.id, "position": pt.index, "task": pt.name, "state": view.state,
            "key": view.key, "key_parts": key_parts(pt, keys),
            "params": {k: param_value(v) for k, v in pt.params.items()},
            "upstreams": list(pt.upstreams), "started": view.started, "ended": view.ended,
            "attempts": view.attempts, "where_": view.where, "branches": view.branches,
            "result_hash": digest[0], "preview": digest[1], "error": _error(view),
        })
    return record, tasks


def key_parts(pt: PlannedTask, keys: Mapping[str, str | None]) -> dict[str, Any]:
    """What a task's cache key is made of, by part, as far as it is known; ``keys`` holds
    the cache keys of (at least) its upstreams, by name.

    Labelled parts come from a ``key_parts`` attribute of the planned task or of its
    task (a mapping, or a callable returning one): ``Task.key_parts`` gives the helpers,
    local modules, package versions and globals its last key covered. They replace
    ``extra`` (the same thing as one text), and ``nbflow runs diff`` names them.
    """
    try:
        code: str | None = pt.task.code_key
    except Exception:  # a function whose source cannot be read
        code = None
    parts: dict[str, Any] = {
        "code": code, "params": pt.params_key, "extra": pt.extra_key,
        "upstreams": {u: keys.get(u) for u in pt.upstreams},
    }
    for owner in (pt, pt.task):
        more = getattr(owner, "key_parts", None)
        if callable(more):
            more = more()
        if isinstance(more, Mapping) and more:
            # labelled parts ("package pandas": "2.2.3", "function 'clean'": hash) say
            # what ``extra`` says, part by part
            parts.pop("extra", None)
            parts.update({str(k): jsonable(v) for k, v in more.items()})
    return parts


def module_versions(tasks: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The local module versions the tasks' key parts name (``"module helpers": digest``),
    by digest, with their files and definitions, for the run database."""
    from ..code_sources import module_details

    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        for label, digest in task["key_parts"].items():
            if label.startswith(MODULE) and isinstance(digest, str) and digest not in out:
                details = module_details(digest)
                if details is not None:
                    out[digest] = details
    return out


def run_params(plan: Plan) -> dict[str, Any]:
    """The run's parameters: every value its tasks got (given, default or notebook)."""
    params: dict[str, Any] = {}
    for pt in plan.tasks:
        for name, value in pt.params.items():
            params.setdefault(name, param_value(value))
    for name, value in plan.params.items():
        params[name] = param_value(value)
    return params


def param_value(value: Any) -> Any:
    """A parameter as recorded: its JSON form, or a short ``repr`` for a big or odd value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return jsonable(value)
    try:
        data = jsonable(value)
        if len(repr(data)) <= PARAM_CHARS:
            return data
    except Exception:
        pass
    return _preview(value)


def result_digest(value: Any) -> tuple[str, str]:
    """``(hash, preview)`` of a result: blake2b of its cloudpickle, else of its repr."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(value, protocol=5)
    except Exception:
        data = b"repr:" + _preview(value, limit=None).encode("utf-8", "replace")
    return hashlib.blake2b(data, digest_size=16).hexdigest(), _preview(value)


def _remote(run: Run, pt: PlannedTask) -> bool:
    """True when the task ran on a remote executor (dask): its result stays there."""
    option = pt.task.options.executor
    if option is None:
        return bool(getattr(run.executor, "remote", False))
    if isinstance(option, str):
        from ..executors import EXECUTORS

        return bool(getattr(EXECUTORS.get(option), "remote", False))
    return bool(getattr(option, "remote", False))


def _result_digest(run: Run, name: str) -> tuple[str | None, str | None]:
    try:
        value = run.results[name]
    except Exception as exc:  # a stream's items that are gone, a store that refused it
        logger.debug("nbflow history: no result of %r to hash: %s", name, exc)
        return None, None
    return result_digest(value)


def _preview(value: Any, limit: int | None = PREVIEW_CHARS) -> str:
    try:
        text = _repr.repr(value) if limit is not None else repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + "…"
    return text


def _error(view: TaskView) -> str | None:
    if view.error is None:
        return None
    err = view.error.error
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"
