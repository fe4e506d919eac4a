"""Streaming tasks in the state machine: a generator whose items are branches.

A task whose function is a generator (and that is not mapped itself) *streams*.
Its record has one branch per yielded item, added as the item arrives
(:class:`~nbflow.messages.Yielded`), each final at once with the item as its
value. The tasks that ``map=`` it are element-wise maps over it, so branch i of
a consumer starts as soon as item i exists, while the generator goes on; their
own consumers follow branch by branch in the same way. A task that takes the
stream without mapping it waits for the stream's end and gets the whole list.

A stream is *open* until its generator ends (:class:`~nbflow.messages.StreamEnded`);
a task that maps an open stream (or maps such a task) cannot end before its
source ends, even when all its branches so far are final. The generator runs in
a thread of its own (``stream_pump.py``), never on the scheduler's.

This is a mixin of :class:`~nbflow.transitions.Transitions`: it uses its records
and helpers and changes state only inside :meth:`Transitions.handle`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .batching import n_batches
from .branch_window import BranchWindow
from .messages import Instruction, Item, StartStream, StopStream, StreamEnded, Yielded
from .errors import InvalidOptionError, UnboundedStreamError
from .plan import PlannedTask
from .records import WAITING, ItemRecord, TaskRecord
from .states import FINAL, OK, TaskState, mapped_state

if TYPE_CHECKING:
    from .values import Failed


class StreamTransitions:
    """The handlers and hooks of streaming tasks (see the module docstring)."""

    if TYPE_CHECKING:  # what it uses of Transitions and RunRecords
        records: list[TaskRecord]
        now: float
        cancelling: bool

        def _set_state(self, rec: TaskRecord, state: TaskState,
                       error: Failed | None = None) -> None: ...
        def _try_activate(self, rec: TaskRecord, out: list[Instruction]) -> None: ...
        def _end_item(self, rec: TaskRecord, i: int, state: TaskState, value: Any,
                      out: list[Instruction], now: float) -> None: ...
        def _end_task(self, rec: TaskRecord, state: TaskState, out: list[Instruction]) -> None: ...
        def _consider(self, rec: TaskRecord, i: int, out: list[Instruction]) -> None: ...
        def arguments(self, item: Item) -> dict[str, Any]: ...

    def _start_stream(self, rec: TaskRecord, out: list[Instruction]) -> None:
        """A streaming task may run: start its generator; its items come as they are made."""
        rec.items = new_items(rec, 0)
        rec.stream_open = True
        rec.started = self.now
        rec.attempts = 1
        rec.in_flight = 1
        self._set_state(rec, "running")
        for child in rec.ew_children:
            self._try_activate(self.records[child], out)
        out.append(StartStream(rec.pt.index, self.arguments((rec.pt.index, None))))

    def _yielded(self, stimulus: Yielded, out: list[Instruction]) -> None:
        rec = self.records[stimulus.task]
        if not rec.stream_open or rec.items is None or self.cancelling:
            return  # late: the stream was stopped
        for value in stimulus.values:
            item = ItemRecord()
            item.attempt = 1
            rec.items.append(item)
            self._grow(rec, out)
            self._end_item(rec, len(rec.items) - 1, "succeeded", value, out, stimulus.at)
        rec.consumed = consumed(self.records, rec)  # (all of them, when nothing maps it)

    def _grow(self, rec: TaskRecord, out: list[Instruction]) -> None:
        """``rec`` got one more branch: so do the element-wise maps over it (one more
        batch, for a ``batch_size`` map, when a batch begins), recursively."""
        for child in rec.ew_children:
            crec = self.records[child]
            if crec.activated and crec.items is not None and crec.state not in FINAL:
                if len(crec.items) < branch_count(crec, len(rec.items or ())):
                    crec.items.append(ItemRecord())
                    self._grow(crec, out)

    def _follow(self, crec: TaskRecord, i: int, out: list[Instruction]) -> None:
        """Item ``i`` of ``crec``'s source is final: consider the branch that waits for it
        (for a ``batch_size`` map, its batch once the batch is complete)."""
        size = crec.pt.task.options.batch_size
        if size is None:
            self._consider(crec, i, out)
            return
        j = i // size
        if self._batch_complete(crec, j):
            self._consider(crec, j, out)

    def _batch_complete(self, crec: TaskRecord, j: int) -> bool:
        """Whether batch ``j`` of a ``batch_size`` map can start: it waits, and its items
        are all there and final (the last batch: the stream ended)."""
        if crec.items is None or j >= len(crec.items) or crec.items[j].phase != WAITING:
            return False
        size = crec.pt.task.options.batch_size or 1
        src = self.records[crec.pt.map_source]  # type: ignore[index]
        chunk = (src.items or [])[j * size:(j + 1) * size]
        full = len(chunk) == size or src.state in FINAL
        return bool(chunk) and full and all(it.phase in FINAL for it in chunk)

    def _stream_ended(self, stimulus: StreamEnded, out: list[Instruction]) -> None:
        rec = self.records[stimulus.task]
        if not rec.stream_open:
            return
        rec.stream_open = False
        rec.in_flight = 0
        rec.where = stimulus.where
        if stimulus.output is not None:
            rec.output[None] = stimulus.output
        if rec.ended is None or stimulus.ended > rec.ended:
            rec.ended = stimulus.ended
        if stimulus.failure is not None:
            rec.error = stimulus.failure  # the items made before it are kept (and mapped)
            self._end_task(rec, "failed", out)
            return
        self._end_task(rec, mapped_state(rec.counts, rec.done) if rec.items else "succeeded", out)

    def _release_front(self, rec: TaskRecord) -> None:
        """Release the front branches of a task fed by an unbounded stream that nothing
        needs any more: final, finished with by every task that maps it, and read by
        ``run.stream`` if it reads them (a task nothing maps or reads keeps its results)."""
        items = rec.items
        if not isinstance(items, BranchWindow):
            return
        while items.released < len(items):
            i = items.released
            if items[i].phase not in FINAL or (rec.watched and rec.delivered <= i):
                return
            if not rec.watched and not rec.ew_children:
                return
            for c in rec.ew_children:
                crec = self.records[c]
                if crec.state in FINAL:
                    continue
                j = i // (crec.pt.task.options.batch_size or 1)
                if crec.items is None or j >= len(crec.items) or crec.items[j].phase not in FINAL:
                    return
            items.release_next()

    def _released_more(self, rec: TaskRecord) -> None:
        """A branch of ``rec`` ended: ``rec``, and its source, may release their front."""
        if rec.releasing:
            self._release_front(rec)
            if rec.pt.elementwise:
                self._release_front(self.records[rec.pt.map_source])  # type: ignore[index]

    def _stop_stream(self, rec: TaskRecord, out: list[Instruction]) -> None:
        """A cancel: stop the generator (its ``finally`` runs in its own thread)."""
        if rec.stream_open:
            rec.stream_open = False
            out.append(StopStream(rec.pt.index))

    def _source_open(self, rec: TaskRecord) -> bool:
        """Whether branches may still be added to ``rec`` (its source stream goes on)."""
        if rec.pt.stream:
            return bool(rec.stream_open)
        if rec.pt.elementwise:
            assert rec.pt.map_source is not None
            return self.records[rec.pt.map_source].state not in FINAL
        return False

    def _source_closed(self, rec: TaskRecord, out: list[Instruction]) -> None:
        """``rec``'s source ended: start its last, smaller batch (``batch_size``), and end
        ``rec`` now if all of its branches are final."""
        if rec.pt.task.options.batch_size is not None and rec.items and rec.state not in FINAL:
            if self._batch_complete(rec, len(rec.items) - 1):
                self._consider(rec, len(rec.items) - 1, out)
        if rec.activated and rec.items is not None and rec.state not in FINAL \
                and rec.done == len(rec.items) and rec.pt.branches:
            self._end_task(rec, mapped_state(rec.counts, rec.done) if rec.items else "succeeded",
                           out)


def new_items(rec: TaskRecord, n: int) -> list[ItemRecord] | BranchWindow:
    """``n`` new branches for ``rec``: a list, or a window for a task fed by an unbounded
    stream (``branch_window.py``)."""
    if not rec.releasing:
        return [ItemRecord() for _ in range(n)]
    window = BranchWindow()
    for _ in range(n):
        window.append(ItemRecord())
    return window


def note_consumed(records: list[TaskRecord], rec: TaskRecord) -> None:
    """A branch of ``rec`` ended: if ``rec`` maps a stream, update how far the stream's
    consumers got (its view shows it; the pump's backpressure reads it too)."""
    if rec.pt.elementwise:
        src = records[rec.pt.map_source]  # type: ignore[index]
        if src.pt.stream:
            src.consumed = consumed(records, src)
            src.dirty = True


def check_streams(tasks: list[PlannedTask]) -> None:
    """Refuse, before a run, ``batch_size`` on a task that does not map a stream, and a
    task that takes an unbounded stream (or a map fed by one) whole."""
    unbounded: list[bool] = []
    for pt in tasks:
        unbounded.append((pt.stream and pt.task.options.unbounded)
                         or (pt.elementwise and unbounded[pt.map_source]))  # type: ignore[index]
        for d in pt.deps:
            if unbounded[d] and d != pt.map_source:
                raise UnboundedStreamError(pt.name, tasks[d].name)
        if pt.task.options.batch_size is None:
            continue
        source = None if pt.map_source is None else tasks[pt.map_source]
        if source is None or not source.stream:
            what = ("maps nothing" if source is None else
                    f"maps {source.name!r}, which is not a stream (a generator function)")
            raise InvalidOptionError(pt.name, "batch_size", f"takes the items of a stream N at a "
                                     f"time, but task {pt.name!r} {what}. Map a generator task, "
                                     "or drop batch_size")


def branch_count(crec: TaskRecord, source_items: int) -> int:
    """How many branches an element-wise map has over a source with that many items."""
    size = crec.pt.task.options.batch_size
    return source_items if size is None else n_batches(source_items, size)


def source_phase(records: list[TaskRecord], crec: TaskRecord, i: int) -> str:
    """The phase that decides branch ``i`` of an element-wise map: its source item's (for a
    batch: "succeeded" when all of the batch's items are OK, else the first that is not)."""
    src = records[crec.pt.map_source]  # type: ignore[index]
    size = crec.pt.task.options.batch_size
    if size is None:
        return src.items[i].phase  # type: ignore[index]
    for item in (src.items or [])[i * size:(i + 1) * size]:
        if item.phase not in OK:
            return item.phase
    return "succeeded"


def batch_values(up: TaskRecord, b: int, size: int) -> list[Any]:
    """The values of batch ``b`` of ``up``'s items (joined where the task runs)."""
    return [it.value for it in (up.items or [])[b * size:(b + 1) * size]]


def consumed(records: list[TaskRecord], rec: TaskRecord) -> int:
    """How many of a stream's items every task that maps it has finished with: the
    generator may run ahead of this by the stream's bound (backpressure)."""
    made = len(rec.items or ())
    counts = [min(made, records[c].done * (records[c].pt.task.options.batch_size or 1))
              for c in rec.ew_children
              if records[c].items is not None and records[c].state not in FINAL]
    return min(counts) if counts else made


def values_of(rec: TaskRecord) -> list[Any]:
    """A stream's items so far."""
    return [it.value for it in rec.items or ()]
