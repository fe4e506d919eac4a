"""Run task bodies on a pool of worker threads (the default executor).

Workers pull items from one queue and push outcomes to an :class:`Outbox`
that wakes the scheduler loop once per batch, so the per-item cost is a queue
hand-off rather than an asyncio future and a loop wake-up per task. A thread
cannot be killed: an item that is cancelled or times out while running is
abandoned, and a replacement worker keeps the pool at its size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Hashable, Sequence

from .. import config
from .base import Executor, Outbox, WorkItem, call_item

_STOP = None
#: items queued per worker while items take long (and at first) / while they are short
_DEPTH_LONG, _DEPTH_SHORT = 2, 16
#: seconds: items shorter than this on average count as short
_SHORT_ITEM = 0.001


class ThreadExecutor(Executor):
    """A pool of ``max_workers`` threads (default: the ``max_workers`` setting, else CPUs + 4)."""

    name = "threads"

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        self.max_workers = max_workers
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[WorkItem | None] = queue.SimpleQueue()
        self._outbox: Outbox | None = None
        self._workers = 0
        self._in_flight = 0
        self._dropped: set[Hashable] = set()
        #: items whose bodies run now, with where to report them abandoned
        self._running: dict[Hashable, WorkItem] = {}
        self._lock = threading.Lock()
        self._size = 0
        #: items queued per worker (see free_slots); adapts to how long items take
        self._depth = _DEPTH_LONG

    def _pool_size(self) -> int:
        if self.max_workers is not None:
            return max(1, self.max_workers)
        configured = int(config.get("max_workers"))
        return configured if configured > 0 else min(32, (config.max_workers() + 4))

    async def _start(self) -> None:
        assert self._loop is not None
        self._outbox = Outbox(self._loop, self._deliver)
        self._size = self._pool_size()
        for _ in range(self._size):
            self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            self._workers += 1
            n = self._workers
        thread = threading.Thread(target=self._work, name=f"nbflow-worker-{n}", daemon=True)
        thread.start()

    def free_slots(self) -> int:
        # Keep items queued for each worker so a worker never waits for the loop. How
        # many adapts to the items: tiny ones need a deep queue, so the loop wakes up
        # once per big batch of outcomes instead of once per item (on a small machine a
        # thread hand-off costs more than a no-op task); long ones keep it shallow, so
        # that priorities, not queue order, decide what starts next.
        return self._depth * self._size - self._in_flight

    def _submit(self, items: Sequence[WorkItem]) -> None:
        self._in_flight += len(items)
        put = self._queue.put
        for item in items:
            put(item)

    def _cancel(self, ids: list[Hashable]) -> None:
        replace = 0
        with self._lock:
            for id_ in ids:
                self._dropped.add(id_)
                running = self._running.get(id_)
                if running is not None:
                    replace += 1
                    if running.board is not None:  # it says so until its body returns
                        running.board.abandoned(id_)
            self._in_flight -= len(ids)
        for _ in range(replace):  # the abandoned thread keeps running; keep the pool whole
            self._spawn()
            with self._lock:
                self._size += 1

    def _deliver(self, outcomes: list) -> None:  # type: ignore[type-arg]
        if self._closed or self._on_done is None:
            return
        kept = []
        with self._lock:
            for outcome in outcomes:
                if outcome.id in self._dropped:
                    self._dropped.discard(outcome.id)
                else:
                    kept.append(outcome)
        self._in_flight -= len(kept)
        if kept:
            busy = sum(o.ended - o.started for o in kept) / len(kept)
            self._depth = _DEPTH_SHORT if busy < _SHORT_ITEM else _DEPTH_LONG
            self._on_done(kept)

    def _work(self) -> None:
        get = self._queue.get
        where = f"thread {threading.current_thread().name}"
        outbox = self._outbox
        assert outbox is not None
        while True:
            item = get()
            if item is _STOP:
                return
            with self._lock:
                if item.id in self._dropped:
                    self._dropped.discard(item.id)
                    continue
                self._running[item.id] = item
            outcome = call_item(item, where)
            with self._lock:
                self._running.pop(item.id, None)
                abandoned = item.id in self._dropped
                if abandoned:
                    self._dropped.discard(item.id)
                    self._size -= 1
            if abandoned:
                if item.board is not None:
                    item.board.ended(item.id)
                return  # a replacement took this thread's place
            outbox.put(outcome)

    async def _close(self) -> None:
        for _ in range(self._workers):
            self._queue.put(_STOP)
