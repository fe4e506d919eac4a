"""The ready queues of a run: items waiting for a free executor slot, best first.

One queue per executor *lane* (see ``lanes.py``: a task's ``executor=`` option
gives it a lane of its own), and one for ``async def`` items, which run on the
scheduler loop. Within a queue, a higher ``priority=`` comes first. Between
tasks of equal priority the queue is fair: the n-th item a task queued goes
after every other task's (n-1)-th, so a map with 1,000 branches takes turns
with the other ready tasks instead of holding every worker until it is done.
Then items go in the order they became ready. An entry is only a hint: the
state machine checks the item's phase when it pops one, so entries of items
that were cancelled or taken back meanwhile are skipped, not searched for.
"""

from __future__ import annotations

import heapq

#: (-priority, items the task queued before this one, sequence number, task index, item index)
Entry = tuple[int, int, int, int, int]


class ReadyQueues:
    """Priority queues of ready items, by lane."""

    def __init__(self) -> None:
        self._lanes: list[list[Entry]] = [[]]
        self._lane_of: list[int] | None = None
        self._async: list[Entry] = []
        self._seq = 0
        #: items each task (by index) has queued so far: its turn in the fair order
        self._turns: dict[int, int] = {}

    @property
    def lane_of(self) -> list[int] | None:
        """Each task's lane (by index), or None when every task is on lane 0."""
        return self._lane_of

    def set_lanes(self, lanes: list[int]) -> None:
        """Give each task (by index) an executor lane."""
        self._lane_of = lanes
        while len(self._lanes) <= max(lanes, default=0):
            self._lanes.append([])

    def push(self, t: int, i: int, priority: int, asynchronous: bool) -> None:
        """Item ``i`` of task ``t`` is ready."""
        self._seq += 1
        turn = self._turns.get(t, 0)
        self._turns[t] = turn + 1
        if asynchronous:
            queue = self._async
        else:
            queue = self._lanes[0 if self._lane_of is None else self._lane_of[t]]
        heapq.heappush(queue, (-priority, turn, self._seq, t, i))

    def pop(self, lane: int, asynchronous: bool = False) -> tuple[int, int] | None:
        """The best ``(task, item)`` of ``lane`` (or of the ``async def`` queue), removed;
        None when it is empty."""
        queue = self._async if asynchronous else self._lanes[lane]
        if not queue:
            return None
        _, _, _, t, i = heapq.heappop(queue)
        return t, i

    def size(self, lane: int, asynchronous: bool = False) -> int:
        """Entries queued on ``lane`` (stale ones included)."""
        return len(self._async if asynchronous else self._lanes[lane])

    def clear(self) -> None:
        """Drop every entry (the run was cancelled)."""
        for queue in self._lanes:
            queue.clear()
        self._async.clear()
