from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nbflow import graph


def test_topological_order_keeps_declaration_order_for_ties():
    parents = {"a": [], "b": [], "c": ["a"], "d": ["b", "c"]}
    assert graph.topological_order(parents) == ["a", "b", "c", "d"]


def test_find_cycle_returns_the_path():
    parents = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    cycle = graph.find_cycle(parents)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    # each node depends on the next one in the path
    for node, up in zip(cycle, cycle[1:]):
        assert up in parents[node]


def test_self_loop_is_a_cycle():
    assert graph.find_cycle({"a": ["a"]}) == ["a", "a"]


def test_no_cycle():
    assert graph.find_cycle({"a": [], "b": ["a"]}) is None


def test_long_chain_has_no_recursion_limit():
    n = 20_000
    parents = {f"t{i}": ([f"t{i - 1}"] if i else []) for i in range(n)}
    assert graph.find_cycle(parents) is None
    assert graph.topological_order(parents)[-1] == f"t{n - 1}"
    assert len(graph.ancestors(parents, [f"t{n - 1}"])) == n


def test_ancestors_descendants():
    parents = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"]}
    assert graph.ancestors(parents, ["c"]) == {"a", "b", "c"}
    assert graph.descendants(parents, ["b"]) == {"b", "c"}
    assert graph.children_of(parents) == {"a": ["b", "d"], "b": ["c"], "c": [], "d": []}


@st.composite
def dags(draw):
    n = draw(st.integers(1, 40))
    parents = {}
    for i in range(n):
        ups = draw(st.sets(st.integers(0, i - 1), max_size=4)) if i else set()
        parents[f"n{i}"] = [f"n{u}" for u in sorted(ups)]
    return parents


@settings(max_examples=100, deadline=None)
@given(dags())
def test_topological_order_respects_every_edge(parents):
    order = graph.topological_order(parents)
    position = {n: i for i, n in enumerate(order)}
    assert sorted(order) == sorted(parents)
    for node, ups in parents.items():
        for up in ups:
            assert position[up] < position[node]
    assert graph.find_cycle(parents) is None


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_adding_a_back_edge_makes_a_cycle(parents, data):
    names = list(parents)
    node = data.draw(st.sampled_from(names))
    anc = sorted(graph.ancestors(parents, [node]))
    up = data.draw(st.sampled_from(anc))
    cyclic = {k: list(v) for k, v in parents.items()}
    cyclic[up] = cyclic[up] + [node]
    cycle = graph.find_cycle(cyclic)
    assert cycle is not None and cycle[0] == cycle[-1]
    for a, b in zip(cycle, cycle[1:]):
        assert b in cyclic[a]


def test_declaration_order_is_kept_when_it_is_valid():
    parents = {"z": [], "a": ["z"], "m": [], "b": ["a", "m"]}
    assert graph.topological_order(parents) == ["z", "a", "m", "b"]
    # an upstream declared later moves just before its first user
    parents = {"b": ["a"], "c": [], "a": []}
    assert graph.topological_order(parents) == ["c", "a", "b"]
