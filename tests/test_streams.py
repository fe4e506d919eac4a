"""Streaming tasks: generators whose items feed mapped tasks as they come."""

from __future__ import annotations

import itertools
import sys
import threading

import pytest
from conftest import wait_until

import nbflow as nf


def stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("nbflow-stream-")]


def test_consumers_start_while_the_generator_still_produces():
    first_done = threading.Event()
    flow = nf.Flow("s")

    @flow.task
    def source():
        yield 1
        # a barrier before the consumers would never let this event be set
        assert first_done.wait(30), "the consumer of item 0 did not run while the stream ran"
        yield 2

    @flow.task(map="source")
    def double(source):
        if source == 1:
            first_done.set()
        return source * 2

    run = flow.run()
    assert run.results["double"] == [2, 4]
    assert run.results["source"] == [1, 2]
    assert run.task("source").label == "2/2"


def test_maps_chain_item_by_item_and_a_fan_in_gets_the_whole_list():
    flow = nf.Flow("s")

    @flow.task
    def numbers(n: int):
        yield from range(n)

    @flow.task(map="numbers")
    def double(numbers):
        return numbers * 2

    @flow.task(map="double")
    def plus_one(double):
        return double + 1

    @flow.task
    def total(plus_one):
        return sum(plus_one)

    @flow.task
    def listed(numbers):
        return numbers

    run = flow.run(params={"n": 5})
    assert run.results["plus_one"] == [1, 3, 5, 7, 9]
    assert run.results["total"] == 25
    assert run.results["listed"] == [0, 1, 2, 3, 4]


def test_an_empty_stream_succeeds_with_no_branches():
    flow = nf.Flow("s")

    @flow.task
    def nothing():
        yield from ()

    @flow.task(map="nothing")
    def each(nothing):
        return nothing

    run = flow.run()
    assert run.states == {"nothing": "succeeded", "each": "succeeded"}
    assert run.results["each"] == []


def _pump_waits(name: str) -> bool:
    """True while the stream's thread waits for room (backpressure): its stack is in
    ``Pump._wait_for_room``, inside ``Condition.wait``."""
    for thread in threading.enumerate():
        if thread.name == f"nbflow-stream-{name}":
            frame = sys._current_frames().get(thread.ident or 0)
            names = []
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            return "_wait_for_room" in names and names[0] == "wait"
    return False


def test_backpressure_keeps_the_generator_at_most_the_buffer_ahead():
    go = threading.Event()
    produced = []
    flow = nf.Flow("s")

    @flow.task(buffer=3)
    def source():
        for i in range(10):
            produced.append(i)
            yield i

    @flow.task(map="source")
    def slow(source):
        assert go.wait(30)
        return source

    run = flow.run(background=True)
    wait_until(lambda: _pump_waits("source"), what="the generator to wait for its consumers")
    assert len(produced) == 3
    go.set()
    run.wait(60)
    assert run.results["slow"] == list(range(10))


def test_an_infinite_stream_read_with_flow_stream_stops_cleanly():
    closed = threading.Event()
    flow = nf.Flow("s")

    @flow.task(buffer=8)
    def feed():
        try:
            yield from itertools.count()
        finally:
            closed.set()

    @flow.task(map="feed")
    def square(feed):
        return feed * feed

    got = []
    for value in flow.stream("square", ordered=True):
        got.append(value)
        if len(got) == 10:
            break
    assert got == [i * i for i in range(10)]
    assert closed.is_set()
    run = flow.last_run
    assert run is not None and run.done and run.status == "cancelled"
    wait_until(lambda: not stream_threads(), what="no stream thread left")


def test_a_generator_that_raises_keeps_what_it_made():
    flow = nf.Flow("s")

    @flow.task
    def sensor():
        yield 1
        yield 2
        raise ValueError("broken sensor")

    @flow.task(map="sensor")
    def scaled(sensor):
        return sensor * 10

    run = flow.run(raise_on_failure=False)
    assert run.states == {"sensor": "failed", "scaled": "succeeded"}
    assert run.results["scaled"] == [10, 20]
    (failed,) = run.failures
    assert isinstance(failed.error, ValueError)
    assert "while making item 2; the 2 items before it were delivered" in failed.traceback


def test_a_consumer_failing_on_one_item_fails_that_branch_only():
    flow = nf.Flow("s")

    @flow.task
    def items():
        yield from [1, 0, 2]

    @flow.task(map="items")
    def inverse(items):
        return 1 / items

    @flow.task(map="inverse", run_on="always")
    def report(inverse):
        return "failed" if isinstance(inverse, nf.Failed) else inverse

    run = flow.run(raise_on_failure=False)
    assert run.task("inverse").counts == {"succeeded": 2, "failed": 1}
    assert run.results["report"] == [1.0, "failed", 0.5]
    assert list(run.stream("inverse", ordered=True)) == [1.0, 0.5]


def test_cancelling_a_run_stops_a_waiting_generator():
    closed = threading.Event()
    go = threading.Event()
    flow = nf.Flow("s")

    @flow.task(buffer=2)
    def source():
        try:
            yield from itertools.count()
        finally:
            closed.set()

    @flow.task(map="source")
    def stuck(source):
        go.wait(30)
        return source

    run = flow.run(background=True, raise_on_failure=False)
    wait_until(lambda: _pump_waits("source"), what="the generator to wait")
    run.cancel()
    go.set()
    run.wait(60)
    assert run.status == "cancelled" and closed.is_set()
    wait_until(lambda: not stream_threads(), what="no stream thread left")


def test_run_stream_gives_results_in_completion_or_input_order():
    release = {i: threading.Event() for i in range(3)}
    flow = nf.Flow("s")

    @flow.task
    def source():
        yield from range(3)

    @flow.task(map="source")
    def work(source):
        assert release[source].wait(30)
        return source

    run = flow.run(background=True)
    results = run.stream("work")
    release[2].set()
    assert next(results) == 2  # the first to finish comes first
    release[1].set()
    release[0].set()
    assert sorted(results) == [0, 1]
    assert list(run.stream("work", ordered=True)) == [0, 1, 2]
    assert list(run.stream(["source", "work"], ordered=True)) == \
        [("source", 0), ("source", 1), ("source", 2), ("work", 0), ("work", 1), ("work", 2)]


def test_streaming_feeds_process_workers():
    flow = nf.Flow("s")

    @flow.task
    def source():
        yield from range(4)

    @flow.task(map="source")
    def pid_of(source):
        import os

        return source, os.getpid()

    run = flow.run(executor="processes")
    assert [v for v, _ in run.results["pid_of"]] == [0, 1, 2, 3]


@pytest.mark.parametrize(("options", "message"), [
    ({"retries": 1}, "retries' is not available on a streaming task"),
    ({"timeout": 5}, "timeout' is not available on a streaming task"),
])
def test_options_a_stream_cannot_honour_are_refused(options, message):
    flow = nf.Flow("s")
    with pytest.raises(nf.InvalidOptionError, match=message):
        @flow.task(**options)
        def source():
            yield 1


def test_buffer_is_only_for_streams():
    flow = nf.Flow("s")
    with pytest.raises(nf.InvalidOptionError, match="buffer' is for streaming tasks"):
        @flow.task(buffer=3)
        def plain():
            return 1
    with pytest.raises(nf.InvalidOptionError, match="buffer' must be a whole number"):
        @flow.task(buffer=0)
        def source():
            yield 1


def test_batch_size_joins_lists_and_takes_a_smaller_last_batch():
    flow = nf.Flow("s")

    @flow.task
    def rows():
        for i in range(7):
            yield [i]

    @flow.task
    def numbers():
        yield from range(5)

    @flow.task(map="rows", batch_size=3)
    def chunk(rows):
        return rows

    @flow.task(map="numbers", batch_size=2)
    def pairs(numbers):
        return numbers

    @flow.task(map="chunk")
    def size(chunk):
        return len(chunk)

    run = flow.run()
    assert run.results["chunk"] == [[0, 1, 2], [3, 4, 5], [6]]
    assert run.results["pairs"] == [[0, 1], [2, 3], [4]]
    assert run.results["size"] == [3, 3, 1]


def test_batch_size_concatenates_dataframes():
    pd = pytest.importorskip("pandas")
    flow = nf.Flow("s")

    @flow.task
    def frames():
        for i in range(5):
            yield pd.DataFrame({"x": [i, i], "y": [0.5, 1.5]})

    @flow.task(map="frames", batch_size=2)
    def rounded(frames):
        return frames.assign(z=frames.x + frames.y)

    run = flow.run()
    batches = run.results["rounded"]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert list(batches[0].index) == [0, 1, 2, 3] and list(batches[2].x) == [4, 4]


def test_batch_size_on_a_task_that_maps_no_stream_is_refused():
    flow = nf.Flow("s")

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items", batch_size=2)
    def each(items):
        return items

    with pytest.raises(nf.InvalidOptionError, match="which is not a stream"):
        flow.plan()


def test_a_task_that_takes_an_unbounded_stream_whole_is_refused():
    flow = nf.Flow("s")

    @flow.task(unbounded=True)
    def feed():
        yield from itertools.count()

    @flow.task(map="feed")
    def doubled(feed):
        return feed * 2

    @flow.task
    def everything(doubled):
        return doubled

    with pytest.raises(nf.UnboundedStreamError, match="'everything' takes 'doubled' whole"):
        flow.plan()
    flow.drop("everything")
    flow.plan(["doubled"])  # mapping it is fine
    with pytest.raises(nf.InvalidOptionError, match="unbounded' is for streaming tasks"):
        @flow.task(unbounded=True)
        def plain():
            return 1


def test_an_async_generator_streams_with_backpressure_and_a_clean_stop():
    import asyncio

    closed = threading.Event()
    flow = nf.Flow("s")

    @flow.task(buffer=4)
    async def ticks():
        try:
            for i in itertools.count():
                await asyncio.sleep(0)
                yield i
        finally:
            closed.set()

    @flow.task(map="ticks")
    def tripled(ticks):
        return ticks * 3

    got = []
    for value in flow.stream("tripled", ordered=True):
        got.append(value)
        if len(got) == 6:
            break
    assert got == [0, 3, 6, 9, 12, 15] and closed.is_set()

    finite = nf.Flow("f")

    @finite.task
    async def three():
        for i in range(3):
            yield i

    @finite.task(map="three")
    def plus(three):
        return three + 1

    assert finite.run().results["plus"] == [1, 2, 3]


def test_a_stream_node_shows_items_made_consumed_and_a_rate():
    from nbflow.widget.nodes import node_info

    flow = nf.Flow("s")

    @flow.task(buffer=2)
    def source():
        yield from range(5)

    @flow.task(map="source")
    def each(source):
        return source

    @flow.task
    def only_fan_in(source):  # a stream nothing maps is never held back
        return len(source)

    run = flow.run()
    view = run.task("source")
    assert view.stream and view.branches == 5 and view.consumed == 5
    assert view.rate is not None and view.rate > 0
    info = node_info(view)
    assert info["n"] == 5 and info["st"]["done"] == 5 and info["st"]["rate"] > 0
    assert "st" not in node_info(run.task("each"))
    lonely = nf.Flow("l")

    @lonely.task(buffer=1)
    def many():
        yield from range(50)

    @lonely.task
    def count(many):
        return len(many)

    assert lonely.run().results["count"] == 50


@pytest.mark.parametrize(("buffer", "size"), [(1, 2), (2, 2), (2, 4), (3, 4), (4, 3)])
def test_batch_size_larger_than_the_buffer_never_hangs(buffer, size):
    flow = nf.Flow("s")

    @flow.task(buffer=buffer)
    def source():
        for i in range(9):
            yield [i]

    @flow.task(map="source", batch_size=size)
    def chunk(source):
        return sum(source)

    run = flow.run(background=True)
    run.wait(30)
    assert sum(run.results["chunk"]) == sum(range(9))


def test_a_stream_and_what_maps_it_are_never_cached():
    feed = iter([[1, 2], [3, 4]])
    flow = nf.Flow("s")

    @flow.task
    def source():
        yield from next(feed)  # the same code and parameters, other items

    @flow.task(map="source")
    def double(source):
        return source * 2

    assert flow.run().results["double"] == [2, 4]
    again = flow.run()
    assert again.results["double"] == [6, 8]
    assert again.states == {"source": "succeeded", "double": "succeeded"}


def test_an_unbounded_stream_read_as_it_comes_keeps_a_window_not_everything():
    flow = nf.Flow("s")

    @flow.task(buffer=10, unbounded=True)
    def source():
        yield from itertools.count()

    @flow.task(map="source")
    def double(source):
        return source * 2

    @flow.task(map="double")
    def plus(double):
        return double + 1

    for i, value in enumerate(flow.stream("plus", ordered=True)):
        assert value == 2 * i + 1
        if i == 3000:
            break
    run = flow.last_run
    assert run is not None
    for name in ("source", "double", "plus"):
        window = run._sm.records[run._index(name)].items
        assert window.released >= 1000, (name, window.released)
        assert window[0].value is None and window[0].phase == "succeeded"


SPEC_HELPERS = '''
import asyncio


def rows(n: int):
    for i in range(n):
        yield i


async def ticks(n: int):
    for i in range(n):
        await asyncio.sleep(0)
        yield 10 * i


def double(x: int) -> int:
    return 2 * x
'''


@pytest.mark.parametrize("source", ["rows", "ticks"])
def test_a_spec_generator_sync_or_async_streams(tmp_path, source):
    (tmp_path / "stream_helpers.py").write_text(SPEC_HELPERS)
    spec = tmp_path / "flow.yaml"
    spec.write_text(
        "nbflow: 1\nname: spec-stream\n"
        "parameters:\n  n: {type: integer, default: 3}\n"
        "tasks:\n"
        f"  source: {{use: 'stream_helpers:{source}', args: {{n: {{$param: n}}}}}}\n"
        "  doubled: {use: 'stream_helpers:double', map: source, args: {x: {$task: source}}}\n")
    flow = nf.Flow.from_spec(spec)
    assert flow.tasks["source"].is_stream
    run = flow.run(params={"n": 4})
    base = [0, 1, 2, 3] if source == "rows" else [0, 10, 20, 30]
    assert run.results["source"] == base
    assert run.results["doubled"] == [2 * b for b in base]
    assert sorted(flow.stream(params={"n": 3}, outputs=["doubled"])) == [2 * b for b in base[:3]]
