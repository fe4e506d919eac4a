"""Reading the run history: ``nf.runs()``, ``.tasks()`` and ``diff(a, b)``.

Runs are named by id, by a unique prefix of it, or by position from the newest:
``"-1"`` is the latest run, ``"-2"`` the one before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .store import RunStore, writer

if TYPE_CHECKING:
    import pandas as pd

    from ..flow import Flow
    from .frame import RunHistory

__all__ = ["RunDiff", "diff", "runs", "tasks"]

#: the label of a package version among a task's key parts (``"package pandas": "2.2.3"``)
_PACKAGE = "package "


def runs(flow: Flow | str | None = None, *, limit: int | None = None,
         path: str | os.PathLike[str] | None = None) -> RunHistory:
    """The recorded runs (of ``flow``, a Flow or its name), one row per run, oldest first.

    A pandas DataFrame: ``run_id``, ``flow``, ``status``, ``started``, ``ended``
    (UTC timestamps), ``duration`` (seconds), ``tasks`` and the number of tasks in each
    final state, then one column per parameter. ``.tasks()`` gives one row per task
    per run. ``limit`` keeps the newest runs; ``path`` reads another database.
    """
    try:
        from .frame import runs_frame
    except ImportError as exc:
        msg = "nf.runs() returns a pandas DataFrame: install pandas (pip install pandas)"
        raise ImportError(msg) from exc
    name = flow if flow is None or isinstance(flow, str) else flow.name
    store = RunStore(path)
    writer.flush()  # this process's runs still being recorded
    rows = store.runs(name, limit) if store.path.exists() else []
    return runs_frame(store, rows)


def tasks(flow: Flow | str | None = None, *, limit: int | None = None,
          path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per task per run: the same as ``runs(flow, ...).tasks()``."""
    return runs(flow, limit=limit, path=path).tasks()


@dataclass
class RunDiff:
    """What differs between two recorded runs (``nbflow runs diff A B``)."""

    a: dict[str, Any]
    b: dict[str, Any]
    #: parameter -> (value in a, value in b), for those that differ (missing: None)
    params: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: task -> the parts of its cache key that differ (``code``, ``params``, ``extra``,
    #: ``upstreams.NAME``, and any part the key adds, such as module or package versions)
    changed: dict[str, list[str]] = field(default_factory=dict)
    #: tasks that ran in b (state succeeded), with why: changed parts or another reason
    reran: dict[str, list[str]] = field(default_factory=dict)
    #: task -> (result hash in a, in b), for results whose hash differs
    results: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    #: task -> (state in a, state in b), for tasks whose final state differs
    states: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    #: package -> (version in a, in b), for the packages the tasks use whose version differs
    packages: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The diff as JSON-ready data."""
        return {"a": self.a["run_id"], "b": self.b["run_id"],
                "params": {k: list(v) for k, v in self.params.items()},
                "changed": self.changed, "reran": self.reran,
                "results": {k: list(v) for k, v in self.results.items()},
                "states": {k: list(v) for k, v in self.states.items()},
                "packages": {k: list(v) for k, v in self.packages.items()}}

    def __str__(self) -> str:
        a, b = self.a, self.b
        lines = [f"run {a['run_id']} ({a['flow']}, {a['status']}) -> "
                 f"run {b['run_id']} ({b['flow']}, {b['status']})"]
        if not (self.params or self.changed or self.reran or self.results or self.states):
            lines.append("no differences")
        if self.params:
            lines.append("parameters:")
            lines += [f"  {k}: {va!r} -> {vb!r}" for k, (va, vb) in self.params.items()]
        if self.packages:
            lines.append("packages:")
            lines += [f"  {k}: {va or '-'} -> {vb or '-'}" for k, (va, vb)
                      in self.packages.items()]
        if self.changed:
            lines.append("changed keys:")
            lines += [f"  {t}: {', '.join(parts)}" for t, parts in self.changed.items()]
        if self.reran:
            lines.append("re-ran:")
            lines += [f"  {t}: {', '.join(why)}" for t, why in self.reran.items()]
        if self.states:
            lines.append("states:")
            lines += [f"  {t}: {sa} -> {sb}" for t, (sa, sb) in self.states.items()]
        if self.results:
            lines.append("results differ:")
            lines += [f"  {t}: {_short(ha)} -> {_short(hb)}" for t, (ha, hb)
                      in self.results.items()]
        return "\n".join(lines)


def diff(a: str, b: str, *, path: str | os.PathLike[str] | None = None) -> RunDiff:
    """What differs between recorded runs ``a`` and ``b`` (ids, prefixes, or ``-1``...)."""
    store = RunStore(path)
    run_a, run_b = store.run(a), store.run(b)
    by_run = {run_a["run_id"]: {}, run_b["run_id"]: {}}  # type: dict[str, dict[str, Any]]
    for t in store.tasks([run_a["run_id"], run_b["run_id"]]):
        by_run[t["run_id"]][t["task"]] = t
    return compare(run_a, run_b, by_run[run_a["run_id"]], by_run[run_b["run_id"]])


def compare(run_a: dict[str, Any], run_b: dict[str, Any], tasks_a: dict[str, Any],
            tasks_b: dict[str, Any]) -> RunDiff:
    """The :class:`RunDiff` of two run records and their task records by name."""
    out = RunDiff(run_a, run_b)
    pa, pb = run_a["params"], run_b["params"]
    for name in [*pa, *(n for n in pb if n not in pa)]:
        if pa.get(name) != pb.get(name) or (name in pa) != (name in pb):
            out.params[name] = (pa.get(name), pb.get(name))
    for name in [*tasks_a, *(n for n in tasks_b if n not in tasks_a)]:
        ta, tb = tasks_a.get(name), tasks_b.get(name)
        sa, sb = (ta or {}).get("state"), (tb or {}).get("state")
        if sa != sb:
            out.states[name] = (sa, sb)
        parts = _changed_parts(ta, tb) if ta is not None and tb is not None else []
        if parts:
            out.changed[name] = parts
            for part in parts:
                if part.startswith(_PACKAGE) and ta is not None and tb is not None:
                    out.packages[part[len(_PACKAGE):]] = (ta["key_parts"].get(part),
                                                          tb["key_parts"].get(part))
        if tb is not None and sb == "succeeded":
            out.reran[name] = _why(ta, tb, parts)
        ha, hb = (ta or {}).get("result_hash"), (tb or {}).get("result_hash")
        if ha is not None and hb is not None and ha != hb:
            out.results[name] = (ha, hb)
    return out


def _changed_parts(ta: dict[str, Any], tb: dict[str, Any]) -> list[str]:
    ka, kb = ta.get("key_parts") or {}, tb.get("key_parts") or {}
    parts = []
    for part in [*ka, *(p for p in kb if p not in ka)]:
        va, vb = ka.get(part), kb.get(part)
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):  # upstreams, modules, packages
            parts += [f"{part}.{k}" for k in [*va, *(k for k in vb if k not in va)]
                      if va.get(k) != vb.get(k)]
        else:
            parts.append(part)
    if not parts and ta.get("params") != tb.get("params"):
        parts.append("params")
    return parts


def _why(ta: dict[str, Any] | None, tb: dict[str, Any], parts: list[str]) -> list[str]:
    if ta is None:
        return ["not in the first run"]
    if parts:
        return parts
    if tb.get("key") is None:
        return ["not cached (no cache key)"]
    if ta.get("state") not in ("succeeded", "cached"):
        return [f"it {ta.get('state')} in the first run"]
    return ["same key, not found in the cache (forced, or another cache)"]


def _short(value: str | None) -> str:
    return "-" if value is None else value[:12]
