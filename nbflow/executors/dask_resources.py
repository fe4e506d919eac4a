"""Tasks that ask for dask resources no worker has: a warning at once, a failure after a grace period.

dask holds a task sent with ``resources={"GPU": 1}`` until a worker with that
much of each resource is there: silently, and forever if none ever comes. The
:class:`ResourceWatch` of a dask run asks the scheduler about its workers when
such tasks are sent:

- when some worker has enough of every resource asked for, there is nothing to
  do (dask runs the task there when that worker is free);
- when none has, it logs a warning naming the task, the resources it asks for
  and what each worker has, and keeps looking every :data:`CHECK_INTERVAL`
  seconds: a worker that joins meanwhile (an adaptive cluster scaling up, a
  ``dask worker --resources GPU=1`` started by hand) runs the task;
- after ``wait`` seconds (``DaskExecutor(resource_wait=...)``, 60 by default)
  with no such worker, the task's waiting items fail with the same message, so
  the run ends instead of hanging. ``resource_wait=None`` waits as long as it
  takes (the warning still says why nothing happens).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExecutorError

logger = logging.getLogger(__name__)

__all__ = ["CHECK_INTERVAL", "ResourceWatch", "fits", "workers_text"]

#: seconds between two questions to the scheduler while a task waits for resources
CHECK_INTERVAL = 1.0

#: workers named in a message (the rest are counted)
_SHOWN = 5


@dataclass(eq=False)
class _Waiting:
    """Items of one task that ask for one set of resources, sent and not started."""

    task: str
    resources: dict[str, float]
    keys: set[str] = field(default_factory=set)
    #: the loop time since when no worker has had the resources (None: not known yet)
    since: float | None = None


class ResourceWatch:
    """Watches the items of one dask run that ask for resources (see the module doc).

    Parameters
    ----------
    client
        The run's asynchronous ``distributed.Client``.
    address
        The scheduler's address, for messages.
    wait
        Seconds without a worker that has the resources before the items fail
        (None: never).
    waiting
        True while the item of a dask key is still sent and not settled.
    fail
        Fails the items of the given keys with the given error.
    """

    def __init__(self, client: Any, address: str, wait: float | None,
                 waiting: Callable[[str], bool],
                 fail: Callable[[list[str], Exception], None]) -> None:
        self._client = client
        self._address = address
        self._wait = wait
        self._waiting = waiting
        self._fail = fail
        self._groups: dict[tuple[str, tuple[tuple[str, float], ...]], _Waiting] = {}
        self._checker: asyncio.Task[None] | None = None

    def watch(self, task: str, resources: Mapping[str, float], keys: list[str]) -> None:
        """Items of ``task`` were just sent under ``keys``, asking for ``resources``."""
        group_key = (task, tuple(sorted(resources.items())))
        group = self._groups.get(group_key)
        if group is None:
            group = self._groups[group_key] = _Waiting(task, dict(resources))
        group.keys.update(keys)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        """Ask the scheduler about its workers until every watched group is settled."""
        loop = asyncio.get_running_loop()
        while self._groups:
            try:
                workers = await _workers(self._client)
            except Exception:  # the scheduler is gone: the outcome tracker's sweep says so
                logger.debug("asking the scheduler for its workers failed", exc_info=True)
                return
            now = loop.time()
            for group_key, group in list(self._groups.items()):
                group.keys = {k for k in group.keys if self._waiting(k)}
                if not group.keys or fits(group.resources, workers):
                    del self._groups[group_key]  # done, or a worker can run it
                    continue
                if group.since is None:
                    group.since = now
                    logger.warning("%s", self._message(group, workers, waited=None))
                elif self._wait is not None and now - group.since >= self._wait:
                    del self._groups[group_key]
                    self._fail(sorted(group.keys),
                               ExecutorError(self._message(group, workers, waited=self._wait)))
            if self._groups:
                await asyncio.sleep(CHECK_INTERVAL)

    def _message(self, group: _Waiting, workers: Mapping[str, Any],
                 waited: float | None) -> str:
        pairs = [f"{name}={amount:g}" for name, amount in sorted(group.resources.items())]
        flag = pairs[0] if len(pairs) == 1 else '"' + " ".join(pairs) + '"'
        text = (f"task {group.task!r} asks for dask resources {', '.join(pairs)}, which no "
                f"worker of the cluster at {self._address} has ({workers_text(workers)}). Start "
                f"a worker that has them (dask worker {self._address} --resources {flag}), or "
                "change the task's resources=")
        if waited is not None:
            return text + f"; none joined within resource_wait={waited:g}s."
        if self._wait is None:
            return text + "; it waits for such a worker (resource_wait=None)."
        return text + (f"; it waits for such a worker to join, and fails if none does within "
                       f"resource_wait={self._wait:g}s.")

    def close(self) -> None:
        """Stop watching (the run ends)."""
        self._groups.clear()
        if self._checker is not None:
            self._checker.cancel()
            self._checker = None


async def _workers(client: Any) -> dict[str, Any]:
    """Every worker of the scheduler, with its resources (``identity()["workers"]``)."""
    try:
        info = await client.scheduler.identity(n_workers=-1)  # distributed >= 2025.4
    except TypeError:  # older: no n_workers, and every worker is listed
        info = await client.scheduler.identity()
    return dict(info.get("workers") or {})


def fits(resources: Mapping[str, float], workers: Mapping[str, Any]) -> bool:
    """True when some worker (the scheduler's ``identity()["workers"]``) has enough of
    every resource in ``resources``."""
    for worker in workers.values():
        has = worker.get("resources") or {}
        if all(float(has.get(name, 0)) >= amount for name, amount in resources.items()):
            return True
    return False


def workers_text(workers: Mapping[str, Any]) -> str:
    """What each worker has: ``"workers: tcp://a:1 has none; tcp://b:2 has special=1"``."""
    if not workers:
        return "it has no workers"
    parts = []
    for address, worker in sorted(workers.items())[:_SHOWN]:
        has = worker.get("resources") or {}
        what = ", ".join(f"{k}={v:g}" for k, v in sorted(has.items())) or "none"
        parts.append(f"{address} has {what}")
    more = len(workers) - _SHOWN
    if more > 0:
        parts.append(f"{more} more")
    return "workers: " + "; ".join(parts)
