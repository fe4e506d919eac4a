"""The executor interface: where a task body runs.

The scheduler hands an executor :class:`WorkItem` batches with :meth:`submit`
and learns about finished items through the ``on_done`` callback it passed to
:meth:`Executor.start`; that callback is always called on the scheduler's
loop, with a list of :class:`Outcome` (executors coalesce completions, so a
thousand tiny tasks do not mean a thousand loop wake-ups).

Results are opaque *references* to the scheduler: for local executors the
value itself, for a dask executor a future that stays on the cluster. The
scheduler only looks inside through :meth:`split` (items to map over) and
:meth:`fetch` (a value for ``run_if`` or the user).
"""

from __future__ import annotations

import asyncio
import copy
import io
import threading
import time
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import cancellation
from ..cancellation import CancelBoard
from ..capture import Capture
from ..capture import _target as _capture_target
from ..errors import ExecutorError, IterationError
from ..messages import Finished, ItemId
from ..values import Failed


@dataclass(slots=True)
class WorkItem:
    """One call of a task function (one branch of a mapped task)."""

    #: the scheduler's id of the item, ``(item, attempt)`` (opaque to executors)
    id: ItemId
    task: str
    branch: int | None
    attempt: int
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    timeout: float | None = None
    priority: int = 0
    resources: Mapping[str, float] | None = None
    #: where the scheduler marks this attempt when it stops it (see ``cancellation.py``)
    board: CancelBoard | None = None
    #: the arguments holding upstream results: :func:`call_item` hands the body private
    #: copies of them (an executor that sends items elsewhere copies them by sending)
    private: tuple[str, ...] = ()
    #: the id of the item this one may run right after, in one task (``fusion.py``): set
    #: by the scheduler for executors that :attr:`~Executor.fuses`
    fuse_onto: Hashable | None = None

    @property
    def label(self) -> str:
        return self.task if self.branch is None else f"{self.task}[{self.branch}]"


@dataclass(frozen=True, slots=True)
class ResultOf:
    """The result of a work item handed to the same executor earlier, not finished yet.

    Only executors that :attr:`~Executor.chains` receive these in
    :attr:`WorkItem.kwargs`: the item then waits for that result where it runs.
    """

    #: the :attr:`WorkItem.id` of the item whose result this stands for
    id: Hashable


class ResultsOf(list):  # type: ignore[type-arg]
    """A mapped task's branch results, some of them :class:`ResultOf` (still running).

    The input of a task chained onto a mapped task whose branches are all handed
    over (a fan-in); a list of its own type, so an executor finds it without
    looking inside every list input.
    """

    __slots__ = ()


#: What became of a :class:`WorkItem`: its value, or a :class:`~nbflow.Failed`. It is the
#: state machine's :class:`~nbflow.messages.Finished` stimulus, handed over as it is.
Outcome = Finished


def _first_private(kwargs: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """:func:`nbflow.isolation.private_arguments`, imported at its first use (that module
    imports this one), then called directly: an import statement per item costs 1 µs."""
    global _private
    from ..isolation import private_arguments

    _private = private_arguments
    return private_arguments(kwargs, names)


_private: Callable[[dict[str, Any], Iterable[str]], dict[str, Any]] = _first_private


def call_item(item: WorkItem, where: str) -> Outcome:
    """Run ``item`` here and now, turning whatever it raises into a failed outcome.

    Any :class:`BaseException` counts: ``sys.exit()``, an argparse error or a
    ``KeyboardInterrupt`` raised by the body fails the item and goes no further, so
    the thread calling it (a worker, or the scheduler's own on ``inline``) goes on.
    A one-shot iterator it returns is read into a list here (:func:`settle`).
    """
    started = time.time()
    # What capture.capturing() does, without a generator-based context manager: that
    # costs about 1 µs, as much as the rest of running a no-op item here.
    output = Capture()
    token = _capture_target.set(output)
    board = item.board
    asked = None if board is None else cancellation.current.set((board, item.id))
    try:
        if item.private:
            value = item.fn(**_private(item.kwargs, item.private))
        else:
            value = item.fn(**item.kwargs)
        if type(value) not in _PLAIN and is_one_shot(value):
            value = settle(value, item.label)
        ok = True
    except BaseException as exc:  # the task's own error: recorded, never raised here
        value = Failed.from_exception(item.task, exc, item.branch, item.attempt)
        ok = False
    finally:
        _capture_target.reset(token)
        if asked is not None:
            cancellation.current.reset(asked)
    return Outcome(item.id, ok, value, started, time.time(), where, output or None)


#: result types that are certainly not one-shot iterators (checked first: it is faster)
_PLAIN = frozenset({type(None), int, float, str, bytes, bool, list, tuple, dict, set})


def is_one_shot(value: Any) -> bool:
    """True for an iterator that can be read only once (a generator, ``map(...)``, ``zip(...)``).

    An open file is an iterator too, but it is handed on as it is: reading its lines
    into a list is not what returning a file means.
    """
    return isinstance(value, Iterator) and not isinstance(value, io.IOBase)


def settle(value: Iterator[Any], label: str) -> list[Any]:
    """The items of a one-shot iterator a task returned, as a list.

    An iterator can be read once: kept in the cache or handed to two consumers, all
    but the first reader would get nothing (a mapped task would map over no items and
    succeed). So a task that returns one gets the list of its items as its result,
    read where the task ran. Raises :class:`~nbflow.errors.IterationError` naming the
    item whose reading raised.
    """
    items: list[Any] = []
    try:
        for part in value:
            items.append(part)
    except BaseException as exc:
        kind = "generator" if isinstance(value, types.GeneratorType) else type(value).__name__
        msg = (f"task {label!r} returned a {kind} that raised {type(exc).__name__} at item "
               f"{len(items)} while its items were read: {exc}")
        raise IterationError(msg) from exc
    return items


class Executor(ABC):
    """Runs work items somewhere and reports their outcomes on the scheduler loop.

    Subclasses implement :meth:`_start`, :meth:`_submit`, :meth:`_cancel`,
    :meth:`free_slots` and :meth:`_close`. An executor object given to
    ``flow.run`` is configuration: each run uses its own :meth:`duplicate`.
    """

    #: short name used in messages and ``executor="..."``
    name: str = "executor"
    #: True when results stay elsewhere (dask): the scheduler then awaits fetch/split
    remote: bool = False
    #: True when the executor accepts :class:`ResultOf` inputs: an item may be submitted
    #: before its upstream items finished, and waits for them where it runs. The
    #: scheduler then hands over static chains at once instead of one hop at a time.
    chains: bool = False
    #: True when the executor runs an item together with the one it is chained onto, in
    #: one task, when both are in the same batch (:attr:`WorkItem.fuse_onto`; ``fusion.py``)
    fuses: bool = False

    def __init__(self) -> None:
        self._on_done: Callable[[list[Outcome]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, on_done: Callable[[list[Outcome]], None]) -> None:
        """Start on the running loop; ``on_done`` will receive outcome batches there."""
        if self._on_done is not None:
            raise ExecutorError(f"{self.name} executor is already started")
        self._loop = asyncio.get_running_loop()
        self._on_done = on_done
        await self._start()

    async def close(self) -> None:
        """Release workers; items still running are abandoned."""
        if self._on_done is not None and not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def duplicate(self) -> Executor:
        """An unstarted copy with the same configuration."""
        clone = copy.copy(self)
        Executor.__init__(clone)
        clone._reset()
        return clone

    def _reset(self) -> None:
        """Clear per-start state in a duplicate (override when there is any)."""

    @property
    def started(self) -> bool:
        return self._on_done is not None and not self._closed

    # -- work -------------------------------------------------------------------------

    def submit(self, items: Sequence[WorkItem]) -> None:
        """Hand items over; returns at once (call on the scheduler loop)."""
        if not self.started:
            state = "closed" if self._closed else "not started"
            msg = f"{self.name} executor is {state}: use it through flow.run(executor=...)"
            raise ExecutorError(msg)
        self._submit(items)

    def cancel(self, ids: Iterable[Hashable]) -> None:
        """Forget these items: queued ones never start, running ones are abandoned."""
        if self.started:
            self._cancel(list(ids))

    @abstractmethod
    def free_slots(self) -> int:
        """How many more items to hand over now (the scheduler keeps the rest, by priority)."""

    # -- data (overridden by remote executors) -------------------------------------------

    async def split(self, ref: Any) -> list[Any]:
        """The items of a result, for mapping."""
        return split_value(ref)

    async def fetch(self, ref: Any) -> Any:
        """The value behind a result reference."""
        return ref

    async def fetch_many(self, refs: list[Any]) -> list[Any]:
        """The values behind several references (remote executors gather them at once)."""
        return [await self.fetch(r) for r in refs]

    async def apply(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """``fn(**kwargs)`` where the data is (``run_if``); only the answer comes back."""
        return fn(**kwargs)

    def owns(self, value: Any) -> bool:
        """True when ``value`` is a reference to a result this executor keeps elsewhere."""
        return False

    async def cacheable(self, refs: list[Any]) -> list[tuple[bool, Any]]:
        """``(True, value)`` for references worth keeping in the result cache."""
        return [(True, await self.fetch(r)) for r in refs]

    # -- for subclasses -------------------------------------------------------------------

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    def _submit(self, items: Sequence[WorkItem]) -> None: ...

    @abstractmethod
    def _cancel(self, ids: list[Hashable]) -> None: ...

    async def _close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def split_value(value: Any, source: str = "") -> list[Any]:
    """The items of ``value`` (the result of task ``source``), for mapping.

    Raises :class:`~nbflow.errors.IterationError` for a string or bytes (mapping over
    characters is a bug), a value that is not iterable, and one whose iteration raises
    (naming the index of the item it was reading).
    """
    whose = f"the result of task {source!r}" if source else "a result"
    kind = type(value).__name__
    if type(value) is list or type(value) is tuple:
        return list(value)
    if isinstance(value, (str, bytes)):
        msg = f"cannot map over {whose}: it is a {kind}; return a list of the items to map over"
        raise IterationError(msg)
    items: list[Any] = []
    try:
        iterator = iter(value)
    except TypeError as exc:
        msg = f"cannot map over {whose}: a {kind} is not iterable; return a list"
        raise IterationError(msg) from exc
    except BaseException as exc:
        msg = (f"cannot map over {whose}: iter() of the {kind} raised "
               f"{type(exc).__name__}: {exc}")
        raise IterationError(msg) from exc
    try:
        for part in iterator:
            items.append(part)
    except BaseException as exc:
        msg = (f"cannot map over {whose}: reading item {len(items)} of the {kind} raised "
               f"{type(exc).__name__}: {exc}")
        raise IterationError(msg) from exc
    return items


class Outbox:
    """Collects outcomes from worker threads; wakes the loop once per batch, not per item."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[Outcome]], None]):
        self._loop = loop
        self._deliver = deliver
        self._items: list[Outcome] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, outcome: Outcome) -> None:
        """Called from any thread."""
        with self._lock:
            self._items.append(outcome)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop is closed: the run is over, nobody listens
            pass

    def _flush(self) -> None:
        with self._lock:
            batch, self._items = self._items, []
            self._scheduled = False
        if batch:
            self._deliver(batch)
