"""Pure DAG algorithms on ``{node: parents}`` mappings.

Every function is linear in nodes + edges and iterative (no recursion limit on
long chains).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

Parents = Mapping[str, Sequence[str]]


def children_of(parents: Parents) -> dict[str, list[str]]:
    """Invert ``{node: parents}`` into ``{node: children}`` (every node present)."""
    children: dict[str, list[str]] = {n: [] for n in parents}
    for node, ups in parents.items():
        for up in ups:
            children.setdefault(up, []).append(node)
    return children


def find_cycle(parents: Parents) -> list[str] | None:
    """Return one cycle as a path ``[a, b, ..., a]`` (each depends on the next), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(parents, white)
    for start in parents:
        if color[start] != white:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        color[start] = grey
        while stack:
            node, i = stack[-1]
            ups = parents.get(node, ())
            if i < len(ups):
                stack[-1] = (node, i + 1)
                up = ups[i]
                state = color.get(up, black)  # unknown names are not cycles
                if state == grey:
                    return path[path.index(up):] + [up]
                if state == white:
                    color[up] = grey
                    stack.append((up, 0))
                    path.append(up)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return None


def topological_order(parents: Parents) -> list[str]:
    """Nodes with every parent before its children, otherwise in declaration order.

    When the declaration order already respects every edge it is returned as is,
    so users see their tasks in the order they wrote them.
    Raises ``ValueError`` on a cycle (use :func:`find_cycle` for the path).
    """
    position = {n: i for i, n in enumerate(parents)}
    names = list(parents)
    indegree = [0] * len(names)
    children: list[list[int]] = [[] for _ in names]
    for node, ups in parents.items():
        i = position[node]
        for up in ups:
            j = position.get(up)
            if j is not None:
                indegree[i] += 1
                children[j].append(i)
    # A heap of positions: always take the earliest-declared node that is ready.
    heap = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        i = heapq.heappop(heap)
        order.append(names[i])
        for child in children[i]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(heap, child)
    if len(order) != len(names):
        raise ValueError("graph has a cycle")
    return order


def ancestors(parents: Parents, targets: Iterable[str]) -> set[str]:
    """The targets and everything they depend on, transitively."""
    seen: set[str] = set()
    stack = list(targets)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(parents.get(node, ()))
    return seen


def descendants(parents: Parents, sources: Iterable[str]) -> set[str]:
    """The sources and everything that depends on them, transitively."""
    children = children_of(parents)
    seen: set[str] = set()
    stack = list(sources)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(children.get(node, ()))
    return seen

