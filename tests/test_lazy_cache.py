"""A re-run from a disk cache reads only the cached values it needs (issue 20).

Lookups ask the store whether it has a key (``key in store``, which a disk store
answers by checking the entry's MAC, without unpickling it); a value is read when a
task that runs needs it, to split it for a mapped task, or when the user asks.
"""

from __future__ import annotations

import nbflow as nf


class CountingStore(nf.DiskStore):
    """A disk store that records which keys were read (unpickled)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads: list[str] = []

    def get(self, key: str):  # type: ignore[no-untyped-def]
        self.reads.append(key)
        return super().get(key)


def build(store: nf.DiskStore, offset: int = 0) -> nf.Flow:
    flow = nf.Flow("lazy", cache=store)

    @flow.task
    def load():
        return list(range(4))

    @flow.task
    def big(load):
        return [x * 1000 for x in load]

    @flow.task(map="load")
    def tens(load):
        return load * 10

    @flow.task
    def total(tens, offset: int = offset):
        return sum(tens) + offset

    @flow.task
    def summary(big):
        return len(big)

    return flow


def reads(store: CountingStore, flow: nf.Flow, run: nf.Run) -> set[str]:
    """The tasks (or branches) whose values were read, from the keys read."""
    names = {view.key: name for name, view in run.tasks.items()}
    tens = run.task("tens").key
    out = set()
    for key in store.reads:
        if key in names:
            out.add(names[key])
        elif tens is not None and key.startswith(tens + ":"):
            out.add("tens[" + key.split(":")[1] + "]")
    return out


def test_a_fully_cached_rerun_reads_nothing_it_does_not_need(tmp_path):
    store = CountingStore(str(tmp_path))
    first = build(store).run(executor="threads")
    store.flush()
    store.reads.clear()
    run = build(store).run(executor="threads")
    assert set(run.states.values()) == {"cached"}
    # only load, whose items the mapped task needs to know its branches
    assert reads(store, build(store), run) == {"load"}
    assert run.results["summary"] == 4  # asked for: read now
    assert reads(store, build(store), run) == {"load", "summary"}
    assert dict(run.results) == dict(first.results)


def test_a_task_that_runs_reads_only_its_inputs(tmp_path):
    store = CountingStore(str(tmp_path))
    build(store).run(executor="inline")
    store.flush()
    store.reads.clear()
    run = build(store, offset=1).run(executor="inline")  # total's parameter changed
    assert run.states["total"] == "succeeded" and run.results["total"] == 61
    assert reads(store, build(store), run) == {"load", "tens[0]", "tens[1]", "tens[2]",
                                               "tens[3]"}


def test_a_value_gone_before_it_is_read_fails_the_task_that_needed_it(tmp_path):
    store = CountingStore(str(tmp_path))
    gone = build(store).run(executor="inline").task("big").key
    store.flush()
    real_get = store.get

    def vanished(key: str):  # type: ignore[no-untyped-def]
        return (False, None) if key == gone else real_get(key)

    store.get = vanished  # type: ignore[method-assign]  # as if deleted after the lookup
    run = build(store).run(executor="inline", force=["summary"], raise_on_failure=False)
    assert run.states["big"] == "cached" and run.states["summary"] == "failed"
    message = str(run.failures[0].error)
    assert "\n" not in message
    assert message.endswith("Task 'big' has no result: it is cached, but its result could not "
                            "be read back (it is no longer in the cache); run again to "
                            "recompute it.")
