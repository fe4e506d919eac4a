"""Cached values are never shared mutable state: a task (or a notebook cell) that changes
the value it got cannot change it for its siblings, the run's results or later runs."""

from __future__ import annotations

import threading

import pytest

import nbflow as nf
from nbflow.cache import DiskStore, MemoryStore
from nbflow.isolation import Snapshot, is_immutable, private_arguments, private_copy


def _mutating_flow(store: nf.ResultStore | None = None) -> nf.Flow:
    flow = nf.Flow("mutate", cache=store)

    @flow.task
    def numbers():
        return [1, 2, 3]

    @flow.task(cache=False)
    def mutate(numbers):
        numbers.append(99)
        return len(numbers)

    @flow.task(cache=False, after=["mutate"])  # runs after mutate changed its input
    def sibling(numbers):
        return len(numbers)

    return flow


@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_a_task_that_mutates_its_input_changes_nothing_for_the_others(executor):
    flow = _mutating_flow()
    first = flow.run(executor=executor)
    assert first.results["sibling"] == 3 and first.results["mutate"] == 4
    assert first.results["numbers"] == [1, 2, 3]
    second = flow.run(executor=executor)  # numbers comes from the memory store
    assert second.states["numbers"] == "cached"
    assert second.results["sibling"] == 3 and second.results["mutate"] == 4
    second.results["numbers"].append(7)  # the user (a notebook cell) changes a result
    third = flow.run(executor=executor)
    assert third.results["numbers"] == [1, 2, 3] and third.results["sibling"] == 3


def test_racing_siblings_each_get_their_own_copy():
    flow = nf.Flow("race")
    both = threading.Barrier(2)

    @flow.task
    def data():
        return {"items": [0]}

    @flow.task(cache=False)
    def left(data):
        both.wait(10)  # both hold their input at the same time
        data["items"].append("left")
        both.wait(10)
        return data["items"]

    @flow.task(cache=False)
    def right(data):
        both.wait(10)
        data["items"].append("right")
        both.wait(10)
        return data["items"]

    run = flow.run(executor=nf.ThreadExecutor(max_workers=2))
    assert run.results["left"] == [0, "left"] and run.results["right"] == [0, "right"]
    assert run.results["data"] == {"items": [0]}


def test_a_branch_that_mutates_its_item_leaves_the_mapped_result_alone():
    flow = nf.Flow("branches")

    @flow.task
    def rows():
        return [[1], [2]]

    @flow.task(map="rows", cache=False)
    def grow(rows):
        rows.append(0)
        return len(rows)

    @flow.task(cache=False, after=["grow"])
    def total(rows):
        return sum(len(r) for r in rows)

    run = flow.run(executor="inline")
    assert run.results["grow"] == [2, 2] and run.results["total"] == 2
    assert flow.run(executor="inline").results["total"] == 2


def test_a_disk_store_hands_out_copies_while_it_writes(tmp_path):
    store = DiskStore(tmp_path)
    value = {"x": [1]}
    store.put("ab12", value)
    hit, got = store.get("ab12")
    got["x"].append(2)
    assert hit and value == {"x": [1]}
    assert store.flush(10) and store.get("ab12") == (True, {"x": [1]})


def test_the_memory_store_snapshots_on_put_and_copies_on_every_hit():
    store = MemoryStore()
    value = [[1], {"a": {1, 2}}]
    store.put("k", value)
    value[0].append("changed after put")
    one, two = store.get("k")[1], store.get("k")[1]
    assert one == two == [[1], {"a": {1, 2}}]
    assert one is not two and one[0] is not two[0]
    assert store.get("nope") == (False, None)


class Future:
    """Stands for ``distributed.Future``: a reference to a result on a cluster, kept as it is."""

    def __init__(self) -> None:
        self.key = "k"
        self.client = None


class Resource:
    """Neither picklable nor deep-copyable (like a connection)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_what_is_copied_and_what_is_kept(monkeypatch):
    for value in (1, 2.5, "s", b"b", None, True, (1, ("a", 2.0)), frozenset({1, "x"}), len, int):
        assert is_immutable(value) and private_copy(value) is value
    assert not is_immutable((1, [2])) and private_copy((1, [2])) == (1, [2])
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(distributed, "Future", Future)  # a real one needs a cluster
    kept = [nf.Skipped("t", "why"), Future()]
    copied = private_copy([kept[0], {"f": kept[1]}, [1]])
    assert copied[0] is kept[0] and copied[1]["f"] is kept[1]  # kept as they are, at any depth
    lam = [lambda: 1]  # pickle refuses a lambda: deepcopy copies the list, keeps the function
    out = private_copy(lam)
    assert out is not lam and out[0] is lam[0]
    resource = Resource()
    assert private_copy(resource) is resource  # a resource, not data: handed over
    assert Snapshot(resource).value() is resource
    param = [0]
    kwargs = {"n": 3, "xs": [1], "s": "t", "param": param}
    xs = kwargs["xs"]
    out = private_arguments(kwargs, ["n", "xs", "s"])  # the upstream results' names
    assert out["xs"] == xs and out["xs"] is not xs  # an upstream result: copied
    assert kwargs["xs"] is xs  # the shared kwargs are left as they are
    assert out["param"] is param  # a parameter: the caller's own object


def test_numpy_arrays_are_copied_by_their_own_deepcopy():
    np = pytest.importorskip("numpy")
    array = np.arange(6).reshape(2, 3)
    copied = private_copy(array)
    copied[0, 0] = 100
    assert array[0, 0] == 0
    snapshot = Snapshot(array)
    array[0, 1] = 50
    assert snapshot.value()[0, 1] == 1 and snapshot.value() is not snapshot.value()
