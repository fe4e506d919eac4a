"""``nbflow why WORKFLOW TASK``: which part of a task's cache key changed since its last run.

The workflow is planned as a run would plan it, without running a task
(:mod:`~nbflow.history.workflow`). Each part of TASK's key as it would be now is compared
with the parts the run database recorded for TASK in the latest run of that flow (or in
the run given with ``--run``), in the words ``%nbflow why`` uses
(:mod:`~nbflow.history.changes`)::

    report: would re-run: its cache key changed since run 3f2a1b9c0d4e:
      upstream 'clean' changed: function clean_helper in helpers.py at line 12
      parameter 'days' 30 -> 60
      package pandas 2.2.3 -> 3.0.1

An upstream whose key changed is followed to what changed in it. When nothing changed
the answer is a cache hit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..plan import Plan
from ..states import OK
from .changes import param_change, part_changes, short_repr
from .recorder import MODULE, key_parts, param_value
from .store import HistoryError, RunStore, database_path, located
from .workflow import plan_workflow, predicted_keys

__all__ = ["Why", "default_database", "why"]

#: key parts that are not labelled (code, parameters, upstreams, key_extra's text)
_PLAIN = ("code", "params", "extra", "upstreams")


@dataclass
class Why:
    """What ``nbflow why`` found for one task."""

    task: str
    #: the recorded run compared with
    run_id: str
    #: its state in that run
    state: str
    #: its cache key in that run, and as it would be now (None: not cached)
    recorded_key: str | None
    key: str | None
    #: what changed, in words, one line each (empty: nothing)
    changes: list[str] = field(default_factory=list)

    @property
    def hit(self) -> bool:
        """True when a run now would reuse the recorded result."""
        return self.key is not None and self.key == self.recorded_key and self.state in OK

    def __str__(self) -> str:
        since = f"run {self.run_id}"
        if self.hit:
            return (f"{self.task}: would be a cache hit: its cache key is the same as in "
                    f"{since} (code, parameters, helpers, modules, packages, globals and "
                    "upstreams unchanged)")
        if self.changes:
            head = f"{self.task}: would re-run: its cache key changed since {since}:"
            return "\n".join([head, *(f"  {c}" for c in self.changes)])
        if self.key is None:
            return (f"{self.task}: would run: it has no cache key (not cached, or an input "
                    "cannot be hashed)")
        if self.key == self.recorded_key:
            return f"{self.task}: would run again: same cache key, but it {self.state} in {since}"
        return f"{self.task}: would re-run: its cache key differs from {since}"


def default_database(workflow: str | os.PathLike[str]) -> Path:
    """Where a run of ``workflow`` records itself: ``$NBFLOW_HOME/runs.db`` when set, else
    ``.nbflow/runs.db`` beside the workflow file."""
    with located(Path(workflow).resolve().parent / ".nbflow"):
        return database_path()


def why(workflow: str | os.PathLike[str], task: str, pairs: Sequence[tuple[str, str]] = (),
        files: Iterable[str | Path] = (), *, db: str | os.PathLike[str] | None = None,
        run: str | None = None) -> Why:
    """Compare task ``task`` of ``workflow`` as it would run now with its last recorded run.

    ``pairs`` and ``files`` are ``-p NAME VALUE`` and ``-f FILE`` as ``nbflow run`` takes
    them; ``run`` names the recorded run to compare with (default: the latest run of the
    flow that has the task). Raises :class:`~nbflow.errors.UnknownTaskError` for a task
    the workflow lacks, :class:`~nbflow.history.HistoryError` when no run is recorded.
    """
    plan = plan_workflow(Path(workflow), task, pairs, files)
    store = RunStore(db if db is not None else default_database(workflow))
    record, rows = _recorded(store, plan.flow, task, run)
    keys = predicted_keys(plan)
    digests = {v for t in rows.values() for k, v in t["key_parts"].items()
               if k.startswith(MODULE) and isinstance(v, str)}
    known = store.modules(sorted(digests))
    row = rows[task]
    return Why(task, record["run_id"], row["state"], row["key"], keys[task],
               _changes(plan, keys, rows, task, known))


def _recorded(store: RunStore, flow: str, task: str,
              ref: str | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The run to compare with and its task records by name."""
    if ref is not None:
        record = store.run(ref)
        rows = {t["task"]: t for t in store.tasks([record["run_id"]])}
        if task not in rows:
            raise HistoryError(f"run {record['run_id']} in {store.path} has no task {task!r} "
                               "to compare with; pick another run (nbflow runs)")
        return record, rows
    for record in store.runs(flow) if store.path.exists() else []:
        rows = {t["task"]: t for t in store.tasks([record["run_id"]])}
        if task in rows:
            return record, rows
    raise HistoryError(f"no recorded run of flow {flow!r} has task {task!r} in {store.path}: "
                       "run the workflow once (nbflow run), or pass --db for another database")


def _changes(plan: Plan, keys: Mapping[str, str | None], rows: Mapping[str, dict[str, Any]],
             name: str, known: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What differs in ``name``'s key parts, in words; an upstream with another key is
    followed to what changed in it."""
    row = rows.get(name)
    if row is None:
        return ["it is not in the recorded run"]
    pt = plan.by_name[name]
    old, new = row["key_parts"], key_parts(pt, keys)
    out = []
    if old.get("code") != new.get("code"):
        out.append("its code changed")
    params = {k: param_value(v) for k, v in pt.params.items()}
    before = row["params"]
    named = [param_change(p, short_repr(before[p]) if p in before else None,
                          short_repr(params[p]) if p in params else None)
             for p in sorted(set(before) | set(params)) if before.get(p) != params.get(p)]
    if not named and old.get("params") != new.get("params"):
        named = ["its parameters changed"]
    out += named
    out += part_changes(_labelled(old), _labelled(new), known)
    if "extra" in old and "extra" in new and old["extra"] != new["extra"]:
        out.append("its key_extra() changed")
    ups_before = old.get("upstreams") or {}
    for up, key in new["upstreams"].items():
        if ups_before.get(up) != key:
            inner = _changes(plan, keys, rows, up, known) if key is not None else \
                ["it will not be cached"]
            out.append(f"upstream {up!r} changed: " + "; ".join(inner) if inner
                       else f"upstream {up!r} changed")
    return out


def _labelled(parts: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in parts.items() if k not in _PLAIN}
