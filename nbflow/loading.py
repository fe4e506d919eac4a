"""Cached results that a run reads from the store only when something needs them.

A re-run of a flow whose results are all in a disk cache must not read every
intermediate result back into memory: a cached task whose consumers are all
cached too (or that nothing downstream needs) is never used. So for a store
whose reads are slow (:attr:`~nbflow.cache.ResultStore.slow_get`, a disk), the
scheduler answers a cache lookup by asking the store whether it *has* the key
(``key in store``, which a store answers without unpickling the value), and
the state machine records a :class:`Stored` marker as the task's value. The
value itself is read when it is first needed:

- as an input of an item that runs, or of a ``run_if`` (:meth:`CachedValues.resolve`
  replaces the markers in the keyword arguments, in a worker thread);
- to split a cached result for a mapped task;
- when the user asks for it (``run.results[name]``, the notebook binding).

Each consumer reads its own copy, so that no task changes another's input. A
value that is gone by the time it is needed (the cache was cleared meanwhile)
fails the item that needed it with a one-line error; the next run recomputes it. A store whose reads are cheap (the
in-memory one) is read as it is looked up, as before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .cache import ResultStore
from .errors import ResultUnavailableError


@dataclass(frozen=True, slots=True)
class Stored:
    """A cached result that was found in the store and not read yet."""

    key: str
    #: ``task`` or ``task[branch]``, for messages
    label: str


class CachedValues:
    """Answers a run's lookups in a slow store with :class:`Stored` markers, and reads
    their values when something needs them."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        #: True when lookups answer with :class:`Stored` markers (a slow store)
        self.lazy = store.slow_get
        #: a marker was handed out in this run (until then nothing needs resolving)
        self.handed_out = False

    def probe(self, key: str, label: str) -> tuple[bool, Any]:
        """The answer to a lookup of a lazy store: ``(True, Stored)`` or ``(False, None)``.

        Called in a worker thread (the store may look at a file).
        """
        if key in self.store:
            self.handed_out = True
            return True, Stored(key, label)
        return False, None

    def load(self, marker: Stored) -> Any:
        """The value behind ``marker``, read from the store now; from any thread.

        Each read gives a new object (a disk store unpickles, the memory store copies),
        so what one consumer does to its input no other sees. Raises
        :class:`~nbflow.errors.ResultUnavailableError` when the store no longer has it.
        """
        try:
            hit, value = self.store.get(marker.key)
        except Exception as exc:
            raise _gone(marker, f"{type(exc).__name__}: {exc}") from exc
        if not hit:
            raise _gone(marker, "it is no longer in the cache")
        return value

    def value(self, value: Any) -> Any:
        """``value`` with its markers read: a marker, or a list of branch results."""
        if not self.handed_out:
            return value
        if type(value) is Stored:
            return self.load(value)
        if isinstance(value, list) and any(type(v) is Stored for v in value):
            return type(value)(self.load(v) if type(v) is Stored else v for v in value)
        return value

    def needs(self, kwargs: dict[str, Any]) -> bool:
        """True when some argument holds a marker (only looked at once one was handed out)."""
        if not self.handed_out:
            return False
        for v in kwargs.values():
            if type(v) is Stored or (isinstance(v, list) and any(type(x) is Stored for x in v)):
                return True
        return False

    async def resolve(self, calls: list[dict[str, Any]]) -> list[Exception | None]:
        """Replace, in place, the markers in these keyword arguments by their values.

        Returns, for each call, None or the error that kept one of its values from being
        read (:meth:`load`). The reads run in one worker-thread call, so the scheduler's
        loop goes on meanwhile. A list input (a mapped task's branch results) is replaced
        by a new list: the machine's own list of results is not changed.
        """
        slots = [(c, name) for c, kw in enumerate(calls) for name, v in kw.items()
                 if type(v) is Stored or (isinstance(v, list)
                                          and any(type(x) is Stored for x in v))]
        errors: list[Exception | None] = [None] * len(calls)
        if not slots:
            return errors
        loop = asyncio.get_running_loop()
        values = await loop.run_in_executor(
            None, self._read, [calls[c][name] for c, name in slots])
        for (c, name), value in zip(slots, values):
            if isinstance(value, _Unreadable):
                errors[c] = errors[c] or value.error
            else:
                calls[c][name] = value
        return errors

    def _read(self, values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for value in values:
            try:
                out.append(self.value(value))
            except Exception as exc:
                out.append(_Unreadable(exc))
        return out


@dataclass(frozen=True, slots=True)
class _Unreadable:
    error: Exception


def _gone(marker: Stored, why: str) -> ResultUnavailableError:
    return ResultUnavailableError(
        marker.label, f"cached, but its result could not be read back ({why}); run again to "
        "recompute it")
