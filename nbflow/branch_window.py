"""The branches of a task fed by an unbounded stream, kept as a window.

An unbounded stream (``unbounded=True``, ``docs/streams.md``) never ends, so the run
cannot keep a record and a value for every item it made, or for every branch of the
tasks that map it. Such a task's ``items`` is a :class:`BranchWindow`: it behaves like
the list of its branches (index, slice, iterate, append, ``len``), but the branches at
its front are *released* once nothing needs them any more (see
``streams.StreamTransitions._release_front``): they then read as :data:`RELEASED`, a
shared record that is final and holds no value. Memory then follows the branches in
flight, not the length of the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import overload

from .records import ItemRecord

__all__ = ["RELEASED", "BranchWindow"]

#: what a released branch reads as: final, no value
RELEASED = ItemRecord()
RELEASED.phase = "succeeded"
RELEASED.attempt = 1


class BranchWindow:
    """A list of branches whose front can be released (see the module docstring)."""

    __slots__ = ("_base", "_cut", "_live")

    def __init__(self) -> None:
        #: branches released and dropped from ``_live``
        self._base = 0
        #: branches of ``_live`` released but not dropped yet (dropped in bulk)
        self._cut = 0
        self._live: list[ItemRecord] = []

    @property
    def released(self) -> int:
        """How many branches at the front were released."""
        return self._base + self._cut

    def release_next(self) -> None:
        """Release the first branch that is not released yet (its value goes at once)."""
        self._live[self._cut].value = None
        self._cut += 1
        if self._cut > 64 and self._cut * 2 > len(self._live):  # drop them in bulk
            del self._live[:self._cut]
            self._base += self._cut
            self._cut = 0

    def append(self, item: ItemRecord) -> None:
        self._live.append(item)

    def __len__(self) -> int:
        return self._base + len(self._live)

    @overload
    def __getitem__(self, i: int) -> ItemRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[ItemRecord]: ...

    def __getitem__(self, i: int | slice) -> ItemRecord | list[ItemRecord]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if i < 0 or i >= len(self):
            raise IndexError(i)
        k = i - self._base
        return RELEASED if k < self._cut else self._live[k]

    def __iter__(self) -> Iterator[ItemRecord]:
        for _ in range(self._base):
            yield RELEASED
        for k, item in enumerate(self._live):
            yield RELEASED if k < self._cut else item
