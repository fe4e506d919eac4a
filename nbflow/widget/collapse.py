"""Collapsing groups and long chains: the structure the widget draws, and its nodes' states.

A large flow stays readable when related tasks can be drawn as one node. Two kinds
of *unit* can be collapsed:

- a **group**: the tasks declared with the same ``group=`` option
  (``@flow.task(group="cleaning")``, ``%%nbflow task NAME --group cleaning``);
- a **chain**: a path of at least :data:`CHAIN_MIN` tasks (in no group) whose
  links are one-to-one: each task but the last has one downstream task, the next
  one, and each task but the first has one upstream task, the one before.

Collapsing is a way of drawing, nothing else: runs, caches and the widget's
actions (which work on tasks) are unchanged. :class:`Folding` keeps which units
are collapsed; from the full :class:`~nbflow.widget.layout.Structure` it builds
the one drawn (laid out and cached by its key like any other), and the node info
of each collapsed node (:func:`fold_info`): the aggregate state of its members
(:func:`fold_state`, :func:`nbflow.states.aggregate` once they all ended) and how
many of them ended. Pure: no widget library needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import suggest
from ..states import ACTIVE, FINAL, aggregate
from .layout import INITIAL, Fold, Structure

__all__ = ("CHAIN_MIN", "Folding", "chains", "fold", "fold_info", "fold_state", "units")

#: the shortest chain that can be collapsed (shorter ones gain little)
CHAIN_MIN = 4

Nodes = Mapping[str, Mapping[str, Any]]


def units(structure: Structure, chain_min: int = CHAIN_MIN) -> dict[str, Fold]:
    """Every unit of ``structure`` that can be collapsed, by id: its groups, then its
    chains of ``chain_min`` tasks or more."""
    out = {f"group/{label}": Fold(f"group/{label}", "group", label,
                                  tuple(structure.names[i] for i in members))
           for label, members in structure.groups}
    for chain in chains(structure, chain_min):
        first, last = structure.names[chain[0]], structure.names[chain[-1]]
        out[f"chain/{first}"] = Fold(f"chain/{first}", "chain", f"{first} … {last}",
                                     tuple(structure.names[i] for i in chain))
    return out


def chains(structure: Structure, chain_min: int = CHAIN_MIN) -> list[list[int]]:
    """The longest one-to-one paths of tasks in no group, ``chain_min`` tasks or more.

    A link ``u -> v`` is one-to-one when ``v`` is ``u``'s only downstream task and
    ``u`` is ``v``'s only upstream task; a chain is a maximal path of such links
    (so its inner tasks have one upstream and one downstream task each). A chain of
    every task is left out: collapsing it would draw the whole flow as one node.
    """
    n = len(structure.names)
    grouped = {i for _, members in structure.groups for i in members}
    ups: list[set[int]] = [set() for _ in range(n)]
    downs: list[set[int]] = [set() for _ in range(n)]
    for u, d in structure.edges:
        ups[d].add(u)
        downs[u].add(d)

    def next_of(u: int) -> int | None:
        if len(downs[u]) != 1:
            return None
        (v,) = downs[u]
        return v if len(ups[v]) == 1 and v not in grouped else None

    out = []
    for start in range(n):
        if start in grouped:
            continue
        if len(ups[start]) == 1:
            (u,) = ups[start]
            if u not in grouped and next_of(u) == start:
                continue  # not the first task of its chain
        chain = [start]
        nxt = next_of(start)
        while nxt is not None and nxt != start:
            chain.append(nxt)
            nxt = next_of(nxt)
        if chain_min <= len(chain) < n:  # (a flow that is one chain stays as it is)
            out.append(chain)
    return out


def fold(structure: Structure, folds: Iterable[Fold]) -> Structure:
    """``structure`` with each fold's members drawn as one node named by its id.

    Edges between members disappear; an edge into or out of a member goes to or
    from its fold (once). A collapsed group no longer has a box; other groups keep
    theirs. The folded node takes the place of its first member, so the drawing
    keeps the order of the tasks.
    """
    folds = list(folds)
    if not folds:
        return structure
    node_of: dict[str, str] = {m: f.id for f in folds for m in f.members}
    firsts = {f.members[0] for f in folds}
    names = [node_of.get(name, name) for name in structure.names
             if name not in node_of or name in firsts]
    index = {name: i for i, name in enumerate(names)}

    def at(i: int) -> int:
        name = structure.names[i]
        return index[node_of.get(name, name)]

    edges = tuple(dict.fromkeys((at(u), at(d)) for u, d in structure.edges if at(u) != at(d)))
    mapped = frozenset(at(i) for i in structure.mapped if structure.names[i] not in node_of)
    collapsed = {f.label for f in folds if f.kind == "group"}
    groups = tuple((label, tuple(at(i) for i in members))
                   for label, members in structure.groups if label not in collapsed)
    commands = frozenset(at(i) for i in structure.commands if structure.names[i] not in node_of)
    return Structure(structure.flow, tuple(names), edges, mapped, groups,
                     structure.folded + tuple(folds), commands)


def fold_state(states: Iterable[str]) -> str:
    """The state a collapsed node is drawn in, from its members' states.

    Once every member ended, :func:`nbflow.states.aggregate` (failed, cancelled,
    all cached, all skipped, else succeeded); ended or stale, ``stale``. Otherwise
    running while one runs (retrying while the only active ones retry), failed
    once one failed (the rest waits or will be skipped), else ready or pending.
    """
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    total = sum(counts.values())
    ended = {s: k for s, k in counts.items() if s in FINAL}
    done = sum(ended.values())
    if total and done == total:
        return aggregate(ended, total)
    if total and done + counts.get("stale", 0) == total:
        return "stale"
    if counts.get("running"):
        return "running"
    if any(counts.get(s) for s in ACTIVE):
        return "retrying"
    if counts.get("failed"):
        return "failed"
    return "ready" if counts.get("ready") else INITIAL


def fold_info(unit: Fold, nodes: Nodes) -> dict[str, Any]:
    """The node info of a collapsed unit (as :mod:`nbflow.widget.nodes` builds for tasks).

    ``s`` the aggregate state (:func:`fold_state`); ``d`` the members that ended of
    ``n``, with ``c`` the ended ones by state, so the node reads "running 3/12" like
    a mapped task; ``t0``/``t1`` the first start and (once all ended) the last end;
    ``g`` the kind ("group" or "chain"), which tells the front end it is no task.
    """
    states = [str(nodes.get(m, {}).get("s", INITIAL)) for m in unit.members]
    ended: dict[str, int] = {}
    for state in states:
        if state in FINAL:
            ended[state] = ended.get(state, 0) + 1
    info: dict[str, Any] = {"s": fold_state(states), "d": sum(ended.values()),
                            "n": len(states), "c": ended, "g": unit.kind}
    starts = [t for m in unit.members if (t := nodes.get(m, {}).get("t0")) is not None]
    if starts:
        info["t0"] = min(starts)
    ends = [t for m in unit.members if (t := nodes.get(m, {}).get("t1")) is not None]
    if ends and info["d"] == len(states):
        info["t1"] = max(ends)
    return info


class Folding:
    """Which units of a widget's structure are collapsed, and what that draws.

    Not thread-safe: the widget calls it under its own lock. The collapsed units
    are remembered by id, so they stay collapsed when the structure changes (a task
    added) as long as they still exist.

    Parameters
    ----------
    chain_min
        The shortest chain that can be collapsed.
    """

    def __init__(self, chain_min: int = CHAIN_MIN) -> None:
        if chain_min < 2:
            raise ValueError(f"chain_min must be 2 or more (a chain of 1 task is a task), "
                             f"got {chain_min}")
        self.chain_min = chain_min
        #: the full structure (every task)
        self.full: Structure | None = None
        #: the units of the full structure (see :attr:`units`), None until asked for
        self._units: dict[str, Fold] | None = {}
        #: the ids of the collapsed units
        self.collapsed: set[str] = set()
        #: the structure drawn
        self.shown: Structure | None = None
        #: task -> the collapsed unit it is drawn in
        self._drawn_in: dict[str, str] = {}

    def set_structure(self, full: Structure) -> Structure:
        """Take a new full structure; returns the structure to draw."""
        self.full = full
        self._units = None
        if self.collapsed:
            self.collapsed &= self.units.keys()
        return self._refold()

    @property
    def units(self) -> dict[str, Fold]:
        """The units of the full structure, by id: found when first asked for (2,000
        tasks: a few ms), not by every new structure with nothing collapsed."""
        if self._units is None:
            assert self.full is not None
            self._units = units(self.full, self.chain_min)
        return self._units

    def resolve(self, name: str) -> str:
        """The id of the unit ``name`` means: an id (``group/cleaning``, ``chain/load``),
        a group's name, or one of its tasks. Raises ``ValueError`` naming the units."""
        if name in self.units:
            return name
        if f"group/{name}" in self.units:
            return f"group/{name}"
        for unit in self.units.values():
            if name in unit.members:
                return unit.id
        if not self.units:
            msg = (f"cannot collapse {name!r}: this flow has no groups and no chains of "
                   f"{self.chain_min}+ tasks (declare tasks with group='...' to group them)")
            raise ValueError(msg)
        groups = [u.label for u in self.units.values() if u.kind == "group"]
        known = ", ".join(repr(i) for i in self.units)
        msg = (f"cannot collapse or expand {name!r}: it is no group, chain or task of one."
               + suggest(name, [*self.units, *groups]) + f" Units: {known}.")
        raise ValueError(msg)

    def collapse(self, names: Iterable[str], on: bool = True) -> Structure:
        """Collapse (``on``) or expand the units ``names`` mean (see :meth:`resolve`);
        returns the structure to draw. All names are checked before any changes."""
        ids = {self.resolve(name) for name in names}
        if on:
            self.collapsed |= ids
        else:
            self.collapsed -= ids
        return self._refold()

    def _refold(self) -> Structure:
        assert self.full is not None
        folds = [u for i, u in self.units.items() if i in self.collapsed] \
            if self.collapsed else []
        self._drawn_in = {m: u.id for u in folds for m in u.members}
        self.shown = fold(self.full, folds)
        return self.shown

    def infos(self, nodes: Nodes) -> dict[str, dict[str, Any]]:
        """The node info of every collapsed node, from the task nodes."""
        return {i: fold_info(self.units[i], nodes) for i in sorted(self.collapsed)}

    def touched(self, changed: Iterable[str], nodes: Nodes) -> dict[str, dict[str, Any]]:
        """The node info of the collapsed nodes that contain a task of ``changed``."""
        ids = {self._drawn_in[name] for name in changed if name in self._drawn_in}
        return {i: fold_info(self.units[i], nodes) for i in sorted(ids)}

    def graph_json(self) -> dict[str, Any]:
        """The drawn structure for the front end (``DagWidget.graph``), with every unit
        that can be collapsed or expanded (``units``: id -> kind, label, members,
        collapsed)."""
        assert self.shown is not None
        data = self.shown.to_json()
        data["units"] = {i: {**u.to_json(), "collapsed": i in self.collapsed}
                         for i, u in self.units.items()}
        return data
