"""Mixed placement: inputs that cross from one executor to another, and remote results
on their way into the cache.

Each task runs on the executor of its lane (``lanes.py``). Where an input of a task
lives on another executor (a dask future for a task on threads, say), or is a cached
result not read yet (``loading.py``), it is fetched before the task is submitted,
one fetch per executor for a batch of items; a failed fetch fails only the items
that needed it. A remote result goes to the cache only when its executor says it
is cheap to gather (:meth:`~nbflow.executors.base.Executor.cacheable`), in batches.

This is a mixin of :class:`~nbflow.scheduler.Scheduler`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .executors.base import Executor, Outcome, WorkItem
from .values import Failed

if TYPE_CHECKING:
    from .cache import ResultStore
    from .loading import CachedValues
    from .messages import Item

logger = logging.getLogger(__name__)


class MixedPlacement:
    """Fetching crossing inputs and caching remote results (see the module docstring)."""

    if TYPE_CHECKING:  # what it uses of Scheduler
        executors: list[Executor]
        store: ResultStore
        cached: CachedValues
        _crossing: dict[int, list[tuple[str, int]]]
        _resolving: set[tuple[Item, int]]
        _to_store: dict[int, list[tuple[str, Any]]]

        def _background(self, coro: Coroutine[Any, Any, None]) -> None: ...
        def _on_outcomes(self, outcomes: list[Outcome]) -> None: ...

    def _must_fetch(self, t: int, kwargs: dict[str, Any]) -> bool:
        """True when an input of task ``t`` must be fetched from another executor or read
        from the cache before it can run."""
        return t in self._crossing or self.cached.needs(kwargs)

    def _submit_after_fetch(self, executor: Executor, items: list[WorkItem]) -> None:
        """Fetch the inputs that cross from another executor, then submit (in a task)."""
        for item in items:
            self._resolving.add(item.id)
        self._background(self._fetch_and_submit(executor, items))

    async def _fetch_and_submit(self, executor: Executor, items: list[WorkItem]) -> None:
        problems: list[Exception | None] = [None] * len(items)
        if self.cached.handed_out:  # cached inputs not read yet: each item's own problem
            problems = await self.cached.resolve([it.kwargs for it in items])
        try:
            await self._fetch_crossing([(it.id[0][0], it.kwargs)
                                        for it, p in zip(items, problems) if p is None])
        except Exception as exc:
            problems = [p or exc for p in problems]
        if any(problems):
            now = time.time()
            outcomes = []
            for it, problem in zip(items, problems):
                if problem is not None and it.id in self._resolving:
                    self._resolving.discard(it.id)
                    error = RuntimeError(f"the inputs of task {it.label!r} could not be "
                                         f"fetched: {problem}")
                    error.__cause__ = problem
                    failure = Failed.from_exception(it.task, error, it.branch, it.attempt)
                    outcomes.append(Outcome(it.id, False, failure, now, now, "kernel"))
            if outcomes:
                self._on_outcomes(outcomes)
            items = [it for it, problem in zip(items, problems) if problem is None]
        ready = [it for it in items if it.id in self._resolving]
        for it in ready:
            self._resolving.discard(it.id)
        if ready and executor.started:
            executor.submit(ready)

    async def _fetch_crossing(self, calls: list[tuple[int, dict[str, Any]]]) -> None:
        """Replace, in place, the kwargs that cross lanes by their values (one fetch per lane),
        and cached results not read yet by theirs."""
        if self.cached.handed_out:
            for problem in await self.cached.resolve([kwargs for _, kwargs in calls]):
                if problem is not None:
                    raise problem
        wanted: dict[int, list[tuple[dict[str, Any], str]]] = {}
        for t, kwargs in calls:
            for name, lane in self._crossing.get(t, ()):
                if name in kwargs:
                    wanted.setdefault(lane, []).append((kwargs, name))
        for lane, slots in wanted.items():
            values = await self.executors[lane].fetch_many([kw[name] for kw, name in slots])
            for (kw, name), value in zip(slots, values):
                kw[name] = value

    def _store_remote(self, key: str, value: Any) -> bool:
        """Queue a remote result for the cache (gathered in batches); False if not remote."""
        lane = next((i for i, ex in enumerate(self.executors) if ex.remote and ex.owns(value)), -1)
        if lane < 0:
            return False
        queue = self._to_store.setdefault(lane, [])
        queue.append((key, value))
        if len(queue) == 1:
            self._background(self._flush_store(lane))
        return True

    async def _flush_store(self, lane: int) -> None:
        await asyncio.sleep(0.01)  # let the results finishing about now join this batch
        pending = self._to_store.pop(lane, [])
        try:
            answers = await self.executors[lane].cacheable([v for _, v in pending])
        except Exception:
            logger.warning("could not gather results for the cache", exc_info=True)
            return
        for (key, _), (keep, value) in zip(pending, answers):
            if keep:
                try:
                    self.store.put(key, value)
                except Exception:
                    logger.warning("could not cache a result under %s", key, exc_info=True)
