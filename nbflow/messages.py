"""What goes into the state machine (stimuli) and what comes out (instructions).

The scheduler (``scheduler.py``) turns what happens (a run starts, an
executor reports an outcome, a timer fires, the cache answers) into a
stimulus, hands it to :meth:`Transitions.handle <nbflow.transitions.Transitions.handle>`,
and carries out the instructions it gets back. Neither side holds the other's
state: these dataclasses are the whole conversation.

An *item* is ``(task index, branch)``; ``branch`` is None for a task that is not
mapped. An *attempt* counts from 1; a stimulus about an attempt that is no
longer current (cancelled, timed out, retried) is dropped by the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .capture import Capture
from .values import Failed

Item = tuple[int, "int | None"]
#: an attempt of an item: ``(item, attempt)``, the id of an executor's work item
ItemId = tuple[Item, int]


# -- stimuli (in) ---------------------------------------------------------------------------


@dataclass(slots=True)
class Start:
    """The run begins."""


@dataclass(slots=True)
class Take:
    """Hand out up to ``n`` ready items of ``lane`` (``asynchronous``: every ready
    ``async def`` item, which runs on the scheduler loop)."""

    n: int
    lane: int = 0
    asynchronous: bool = False


@dataclass(slots=True)
class ChainAhead:
    """Send ahead the tasks whose upstreams were all handed to a chaining executor."""


@dataclass(slots=True)
class Finished:
    """An attempt of an item ended: ``value`` is its result (``ok``) or a :class:`Failed`.

    Executors report these (``executors.Outcome`` is this class): ``id`` is the
    work item's id, ``(item, attempt)``, so an outcome goes to the machine as it is.
    """

    id: ItemId
    ok: bool
    value: Any
    started: float
    ended: float
    where: str | None = None
    #: what the attempt printed (None when it printed nothing)
    output: Capture | None = None

    @property
    def item(self) -> Item:
        return self.id[0]

    @property
    def attempt(self) -> int:
        return self.id[1]


@dataclass(slots=True)
class CacheAnswer:
    """The answer to :class:`LookupCache`."""

    item: Item
    hit: bool
    value: Any = None


@dataclass(slots=True)
class ConditionAnswer:
    """The answer to :class:`CheckCondition`: ``run_if``'s bool, or its failure."""

    item: Item
    result: bool | Failed


@dataclass(slots=True)
class SplitAnswer:
    """The answer to :class:`SplitResult`: the items, or why the result cannot be split."""

    source: int
    items: list[Any] | Failed


@dataclass(slots=True)
class RetryDue:
    """A retry delay passed: ``attempt`` of the item may start."""

    item: Item
    attempt: int


@dataclass(slots=True)
class TimedOut:
    """An attempt ran past its task's ``timeout=``."""

    item: Item
    attempt: int


@dataclass(slots=True)
class CancelTask:
    """Cancel one task (every branch of a mapped one); the rest of the run goes on."""

    task: int


@dataclass(slots=True)
class Cancel:
    """Stop the run: nothing new starts, running items are cancelled, the run ends."""


@dataclass(slots=True)
class Yielded:
    """A streaming task's generator yielded ``values`` (its next items, in order)."""

    task: int
    values: list[Any]
    #: the time of the last of them
    at: float


@dataclass(slots=True)
class StreamEnded:
    """A streaming task's generator returned (``failure`` None) or raised."""

    task: int
    failure: Failed | None
    started: float
    ended: float
    where: str | None = None
    output: Capture | None = None


Stimulus = (Start | Take | ChainAhead | Finished | CacheAnswer | ConditionAnswer | SplitAnswer
            | RetryDue | TimedOut | CancelTask | Cancel | Yielded | StreamEnded)


# -- instructions (out) ---------------------------------------------------------------------


@dataclass(slots=True)
class Execute:
    """Run one item's function with these keyword arguments."""

    item: Item
    attempt: int
    kwargs: dict[str, Any]


@dataclass(slots=True)
class LookupCache:
    """Look ``key`` up in the result store; answer with :class:`CacheAnswer`."""

    item: Item
    key: str


@dataclass(slots=True)
class CheckCondition:
    """Call the task's ``run_if`` with these arguments; answer with :class:`ConditionAnswer`."""

    item: Item
    kwargs: dict[str, Any]


@dataclass(slots=True)
class SplitResult:
    """Split task ``source``'s result (``value``) into items; answer with :class:`SplitAnswer`.

    ``consumers`` are the tasks that will map over the items.
    """

    source: int
    value: Any
    consumers: tuple[int, ...]


@dataclass(slots=True)
class StoreResult:
    """Keep ``value`` in the result store under ``key``."""

    key: str
    value: Any


@dataclass(slots=True)
class RetryLater:
    """Send :class:`RetryDue` for this item and ``attempt`` after ``delay`` seconds."""

    item: Item
    attempt: int
    delay: float


@dataclass(slots=True)
class CancelRunning:
    """Stop (or abandon) these running ``(item, attempt)`` pairs."""

    items: list[tuple[Item, int]]


@dataclass(slots=True)
class RunFinished:
    """Every task is in a final state."""

    status: str


@dataclass(slots=True)
class StartStream:
    """Start streaming task ``task``'s generator with these arguments (see ``streams.py``)."""

    task: int
    kwargs: dict[str, Any]


@dataclass(slots=True)
class StopStream:
    """Stop streaming task ``task``'s generator (a cancel): its ``finally`` runs."""

    task: int


Instruction = (Execute | LookupCache | CheckCondition | SplitResult | StoreResult | RetryLater
               | CancelRunning | RunFinished | StartStream | StopStream)
