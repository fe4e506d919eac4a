"""What each task last ran with, so ``%nbflow why`` can say what changed.

After a task finishes, a :class:`Snapshot` keeps hashes of what its cache key
is made of (code, each parameter, each notebook global/helper, upstreams).
:func:`explain` compares a snapshot with the task as it is declared now.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..cache import hash_value
from ..states import OK
from ..code_sources import loaded_source
from ..history.changes import param_change, part_changes, short_repr
from ..key_parts import FunctionKey
from .compiler import CellKey, cell_of

if TYPE_CHECKING:
    from ..flow import Flow
    from ..run import Run


def _hash(value: Any) -> str:
    try:
        return hash_value(value)
    except ValueError:
        return f"unhashable:{id(value)}"


@dataclass(frozen=True)
class Snapshot:
    """The inputs of one task in one run."""

    run_id: str
    state: str
    code_key: str
    params: dict[str, str]
    extra: dict[str, str]
    upstreams: tuple[str, ...]
    key: str | None
    #: why it was recomputed ("" when it was cached)
    reason: str = ""
    #: a short repr of each parameter's value, for "parameter 'days' 30 -> 60"
    values: dict[str, str] = field(default_factory=dict)


@dataclass
class History:
    """The latest :class:`Snapshot` of each task (thread-safe)."""

    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, name: str) -> Snapshot | None:
        with self._lock:
            return self.snapshots.get(name)

    def clear(self) -> None:
        with self._lock:
            self.snapshots.clear()

    def drop(self, name: str) -> None:
        with self._lock:
            self.snapshots.pop(name, None)

    def record(self, run: Run, name: str) -> Snapshot:
        """Snapshot task ``name`` of ``run`` (call once it is final)."""
        view = run.task(name)
        pt = run.plan.by_name[name]
        extra = dict(getattr(pt.task.key_extra, "last", None) or {})
        snap = Snapshot(
            run_id=run.id,
            state=view.state,
            code_key=pt.task.code_key,
            params={k: _hash(v) for k, v in pt.params.items()},
            extra=extra,
            values={k: short_repr(v) for k, v in pt.params.items()},
            upstreams=pt.upstreams,
            key=view.key,
        )
        with self._lock:
            prev = self.snapshots.get(name)
        if view.state == "succeeded":
            reasons = _differences(prev, snap, upstream_reran=[
                u for u in pt.upstreams if run.task(u).state == "succeeded"])
            snap = dataclasses.replace(snap, reason="; ".join(reasons))
        with self._lock:
            self.snapshots[name] = snap
        return snap


def _differences(old: Snapshot | None, new: Snapshot, upstream_reran: list[str]) -> list[str]:
    if old is None:
        return ["it had not run before in this kernel"]
    reasons = []
    if old.code_key != new.code_key:
        reasons.append("its code changed")
    for name in sorted(set(old.params) | set(new.params)):
        if old.params.get(name) != new.params.get(name):
            reasons.append(param_change(name, old.values.get(name), new.values.get(name)))
    reasons.extend(part_changes(old.extra, new.extra))
    if old.upstreams != new.upstreams:
        reasons.append("its upstream tasks changed")
    if upstream_reran:
        reasons.append(f"upstream {upstream_reran[0]!r} was recomputed")
    if not reasons:
        if old.state not in OK:
            reasons.append(f"it was {old.state} before")
        elif new.key is None:
            reasons.append("it is not cacheable (--no-cache, or an input cannot be hashed)")
        else:
            reasons.append("its cached result was not available (cache reset)")
    return reasons


# -- predictions -------------------------------------------------------------------------------


def current_params(flow: Flow, name: str) -> dict[str, Any]:
    """The parameter values ``name`` would get from the namespace/defaults now."""
    task = flow.tasks[name]
    ns: Mapping[str, Any] = flow.namespace or {}
    out = {}
    for i in task.inputs:
        if i in flow:
            continue
        if i in ns:
            out[i] = ns[i]
        elif i in task.defaults:
            out[i] = task.defaults[i]
    return out


def predict(flow: Flow, history: History, name: str,
            memo: dict[str, tuple[bool, list[str]]] | None = None) -> tuple[bool, list[str]]:
    """``(will re-run, reasons)`` for a run of ``name`` now, without running anything."""
    memo = {} if memo is None else memo
    if name in memo:
        return memo[name]
    memo[name] = (True, ["it depends on itself"])  # cycle guard
    task = flow.tasks[name]
    snap = history.get(name)
    reasons: list[str] = []
    if snap is None:
        reasons.append("it has not run yet in this kernel")
    elif not task.options.cache:
        reasons.append("it is not cached (--no-cache)")
    else:
        if snap.state not in OK:
            reasons.append(f"it {snap.state} in the last run")
        if snap.code_key != task.code_key:
            reasons.append("its code changed")
        values = current_params(flow, name)
        now = {k: _hash(v) for k, v in values.items()}
        for p in sorted(set(now) | set(snap.params)):
            if now.get(p) != snap.params.get(p):
                new = short_repr(values[p]) if p in values else None
                reasons.append(param_change(p, snap.values.get(p), new))
        key = task.key_extra
        if isinstance(key, (CellKey, FunctionKey)):
            try:
                parts = key.components()
            except Exception as exc:
                parts = {}
                reasons.append(f"its globals cannot be inspected ({exc})")
            reasons.extend(part_changes(snap.extra, parts))
        ups = flow.upstreams(name)
        if tuple(ups) != snap.upstreams:
            reasons.append("its upstream tasks changed")
        for up in ups:
            again, _ = predict(flow, history, up, memo)
            if again:
                reasons.append(f"upstream {up!r} will re-run")
                break
        if not reasons and snap.key is not None and snap.key not in flow.cache:
            reasons.append("its cached result was cleared")
        if not reasons and snap.key is None:
            reasons.append("it could not be cached (an input cannot be hashed)")
    result = (bool(reasons), reasons)
    memo[name] = result
    return result


def stale_reason(flow: Flow, history: History, name: str) -> str | None:
    """Why ``name``'s last result is stale: ``"its code changed"``, ``"module helpers
    changed"`` (a local module it uses, edited and reloaded) or ``"its upstream 'x'
    changed"`` (the nearest upstream task with such a change since it ran), else None.

    Cheap: compares code keys and local module digests with the history, without
    hashing parameters or globals (``%nbflow why`` does that). A task or upstream with no history
    (it never ran in this kernel) counts as unchanged.
    """
    seen: set[str] = set()
    frontier = [name]
    while frontier:  # breadth first, so the nearest changed upstream is named
        following: list[str] = []
        for n in frontier:
            if n in seen or n not in flow:
                continue
            seen.add(n)
            snap = history.get(n)
            if snap is not None and snap.code_key != flow.tasks[n].code_key:
                return "its code changed" if n == name else f"its upstream {n!r} changed"
            module = None if snap is None else _changed_module(snap)
            if module is not None:
                return f"module {module} changed" if n == name else f"its upstream {n!r} changed"
            following.extend(flow.upstreams(n))
        frontier = following
    return None


def _changed_module(snap: Snapshot) -> str | None:
    """The first local module whose source (as loaded) differs from when ``snap`` ran;
    cheap: a file is re-read only when its mtime or size changed."""
    for label, digest in snap.extra.items():
        if not label.startswith("module ") or "'" in label:
            continue
        module = sys.modules.get(label.removeprefix("module "))
        if module is None:
            continue
        source = loaded_source(module)
        if source is not None and source.digest != digest:
            return label.removeprefix("module ")
    return None


def code_stale(flow: Flow, history: History, name: str) -> bool:
    """Cheap staleness: the task or one of its ancestors changed code since it ran.

    Prefer ``flow.stale(name)``, which also says which.
    """
    return stale_reason(flow, history, name) is not None


def explain(flow: Flow, history: History, name: str) -> str:
    """One or two lines: why ``name`` was recomputed or reused, and what the next run does."""
    lines = []
    snap = history.get(name)
    cell = cell_of(flow.tasks[name])
    where = f" ({cell.label})" if cell is not None else ""
    if snap is not None:
        if snap.state == "cached":
            lines.append(f"{name}{where}: reused from the cache in run {snap.run_id}.")
        elif snap.state == "succeeded":
            lines.append(f"{name}{where}: recomputed in run {snap.run_id}: {snap.reason}.")
        else:
            lines.append(f"{name}{where}: {snap.state} in run {snap.run_id}.")
    again, reasons = predict(flow, history, name)
    if again:
        lines.append(f"Next run: {name} will re-run: " + "; ".join(reasons[:3]) + ".")
    else:
        lines.append(f"Next run: {name} will be reused (code, parameters, globals and upstreams "
                     "unchanged).")
    return "\n".join(lines)
