"""Results as they come: ``run.stream(name)`` and ``flow.stream(outputs=[...])``.

A consumer iterates the results of some tasks while the run goes on: each branch
of a mapped or streaming task as soon as it succeeded, a plain task's result
when it ends. The order is the order they finish in, or the branches' order with
``ordered=True`` (a branch that failed or was skipped is passed over). Leaving
the loop early (``break``, an exception, closing the iterator) cancels the run
and waits for it to end, so a streaming source's ``finally`` runs and no thread
is left behind. With an unbounded source the run goes on until the consumer
stops.

It listens to the run's events (an observer) and reads each value when its
branch is final; what was final before it started listening is read first.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .events import Event, RunEvent, TaskEvent
from .states import FINAL, OK

if TYPE_CHECKING:
    from .run import Run

__all__ = ["stream_results"]

_END = object()
#: stands for a branch that ended without a value (failed, skipped, cancelled)
_SKIP = object()
#: seconds between two looks at whether the run ended, while no result comes
_POLL = 0.2


def stream_results(run: Run, names: Sequence[str], ordered: bool = False,
                   pairs: bool = False) -> Iterator[Any]:
    """Yield the results of tasks ``names`` of ``run`` as they come (see the module docstring).

    With ``pairs``, yields ``(task, value)``; else only values.
    """
    indices = {name: run._index(name) for name in names}
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def listen(events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, TaskEvent) and event.task in indices and event.state in FINAL:
                inbox.put((event.task, event.branch))
            elif isinstance(event, RunEvent) and event.status in FINAL:
                inbox.put(_END)

    run.observe(listen)
    reader = _Reader(run, indices, ordered, pairs)
    try:
        yield from reader.catch_up()  # what ended before the observer listened
        while True:
            try:
                got = inbox.get(timeout=_POLL)
            except queue.Empty:
                got = _END if run.done else None
            if got is _END:
                yield from reader.catch_up()  # the last events may still be on their way
                return
            if got is not None:
                yield from reader.one(*got)
    finally:
        if not run.done:
            run.cancel()
            run.wait()


class _Seen:
    """The items delivered so far, in memory that does not grow with a long stream: per
    task, every branch below a watermark, and the few delivered ahead of it."""

    def __init__(self) -> None:
        self.below: dict[str, int] = {}
        self.ahead: dict[str, set[int]] = {}
        self.plain: set[str] = set()

    def has(self, name: str, branch: int | None) -> bool:
        if branch is None:
            return name in self.plain
        return branch < self.below.get(name, 0) or branch in self.ahead.get(name, ())

    def add(self, name: str, branch: int | None) -> None:
        if branch is None:
            self.plain.add(name)
            return
        ahead = self.ahead.setdefault(name, set())
        ahead.add(branch)
        low = self.below.get(name, 0)
        while low in ahead:
            ahead.discard(low)
            low += 1
        self.below[name] = low


class _Reader:
    """Turns final items into values: each once, as they come or in branch order."""

    def __init__(self, run: Run, indices: dict[str, int], ordered: bool, pairs: bool) -> None:
        self.run, self.indices, self.ordered, self.pairs = run, indices, ordered, pairs
        self.seen = _Seen()
        self.next: dict[str, int] = {}
        self.held: dict[tuple[str, int], Any] = {}

    def catch_up(self) -> Iterator[Any]:
        for name, t in self.indices.items():
            for branch, state, value in self.run._final_branches(t, self.seen.below.get(name, 0)):
                yield from self._take(name, branch, state, value)

    def one(self, name: str, branch: int | None) -> Iterator[Any]:
        if self.seen.has(name, branch):
            return
        if branch is None and self.run._has_branches(self.indices[name]):
            return  # a mapped task's own event: its branches carry the values
        found = self.run._final_branch(self.indices[name], branch)
        if found is not None:
            yield from self._take(name, branch, *found)

    def _take(self, name: str, branch: int | None, state: str, value: Any) -> Iterator[Any]:
        if self.seen.has(name, branch):
            return
        self.seen.add(name, branch)
        if branch is not None:
            self.run._delivered(self.indices[name], self.seen.below.get(name, 0))
        value = self.run._readable(self.indices[name], value) if state in OK else _SKIP
        if self.ordered and branch is not None:
            self.held[(name, branch)] = value
            i = self.next.get(name, 0)
            while (name, i) in self.held:
                yield from self._out(name, self.held.pop((name, i)))
                i += 1
            self.next[name] = i
        else:
            yield from self._out(name, value)

    def _out(self, name: str, value: Any) -> Iterator[Any]:
        if value is not _SKIP:
            yield (name, value) if self.pairs else value
