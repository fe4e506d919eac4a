"""Run task bodies on a dask cluster; results stay on the workers as futures.

The executor talks to dask through an asynchronous ``Client`` on the
scheduler's own loop (:mod:`.dask_cluster`), so neither the kernel nor the
scheduler loop ever waits on dask. A downstream task is submitted with its
upstream futures as arguments; values come back to the kernel only through
:meth:`DaskExecutor.fetch` (``run.results[...]``, the magics' binding) and the
result cache (small results only: see :attr:`DaskExecutor.cache_limit`).

Ready items are handed over in batches: items of one task with the same
options (the branches of a mapped task) go to dask as one ``client.map`` call,
one graph update. The executor :attr:`chains`: an item may come with
:class:`~nbflow.executors.ResultOf` inputs, results of items still running,
which become their futures, so dask runs a chain of tasks without a round trip
through the kernel per hop. It also :attr:`fuses`: items of a batch that the
scheduler marked fusible onto the item before them go as one dask task
(:mod:`.dask_fused`, ``nbflow/fusion.py``), which saves dask's round trip too.

This module starts, submits and reads data. What becomes of a submitted item
(its report, its failure, a future that ends without a report, a cancel) is
decided by :class:`.dask_outcomes.OutcomeTracker`, the one place that reads
dask's private future state; what runs on the workers is in :mod:`.dask_worker`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import CancelledError
from itertools import count
from typing import Any

from .. import fusion
from ..errors import ExecutorError
from . import dask_fused, dask_worker, pickling
from .base import Executor, ResultOf, ResultsOf, WorkItem
from .dask_cluster import Connection, connect, dashboard_link, local_cluster
from .dask_outcomes import SWEEP_INTERVAL, OutcomeTracker
from .dask_resources import ResourceWatch
from .dask_refs import client_of, has_future, is_data_ref, is_future, unavailable, unpick

__all__ = ["SWEEP_INTERVAL", "DaskExecutor"]

logger = logging.getLogger(__name__)

_run_ids = count()


class DaskExecutor(Executor):
    """Run tasks on a dask cluster.

    Parameters
    ----------
    address
        ``None``: the process-wide ``LocalCluster`` that nbflow starts on first
        use and reuses (closed at exit); ``"tcp://host:port"``: a running
        scheduler (only connected to, never closed); a ``distributed.Client``
        or a cluster object (anything with ``scheduler_address``): the
        scheduler it talks to.
    security
        A ``distributed.security.Security`` for TLS (``tls://`` addresses).
    n_workers, threads_per_worker, processes
        For the local cluster nbflow starts (ignored for an address).
    connect_timeout
        Seconds to wait for the scheduler before the run fails with a clear error.
    resource_wait
        Seconds a task that asks for ``resources=`` no worker has waits for such a
        worker to join before it fails (a warning names the resources at once);
        None waits as long as it takes. See :mod:`.dask_resources`.
    cache_limit
        Results up to this many bytes (their serialized size, measured on the
        worker) are gathered into the flow's result cache when they finish;
        larger ones stay on the cluster only and are recomputed by a later run
        that needs them.
    """

    name = "dask"
    remote = True
    chains = True
    fuses = True

    def __init__(
        self,
        address: Any = None,
        *,
        security: Any = None,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool | None = None,
        connect_timeout: float = 10.0,
        cache_limit: int = 1_000_000,
        resource_wait: float | None = 60.0,
    ) -> None:
        super().__init__()
        self.address = address
        self.security = security
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.connect_timeout = connect_timeout
        self.cache_limit = cache_limit
        if resource_wait is not None and not (
                isinstance(resource_wait, (int, float)) and 0 <= resource_wait < float("inf")):
            msg = f"DaskExecutor(resource_wait=...) takes seconds >= 0 or None, got {resource_wait!r}"
            raise ExecutorError(msg)
        self.resource_wait = resource_wait
        self._reset()

    def _reset(self) -> None:
        self._conn: Connection | None = None
        self._prefix = f"{next(_run_ids):x}{uuid.uuid4().hex[:8]}"
        self._counter = count()
        #: follows submitted items until their outcomes reach the scheduler (made at start)
        self._tracker: OutcomeTracker | None = None
        #: tasks sent with resources that no worker may have (made at start)
        self._resources: ResourceWatch | None = None
        #: id(function) -> (function, its Packed bytes): each function pickled once a run
        self._packed: dict[int, tuple[Any, dask_worker.Packed]] = {}
        self._client: Any = None
        self._dashboard: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def _start(self) -> None:
        address, security = await self._scheduler_address()
        self._conn = await connect(address, security, self.connect_timeout)
        self._client = self._conn.client
        self._dashboard = dashboard_link(self._conn)
        assert self._loop is not None and self._on_done is not None
        tracker = self._tracker = OutcomeTracker(self._loop, self._conn, self._on_done)
        self._resources = ResourceWatch(self._client, address, self.resource_wait,
                                        tracker.running.__contains__, tracker.fail_unstarted)

    async def _scheduler_address(self) -> tuple[str, Any]:
        """The scheduler's address and the credentials for it, from :attr:`address`.

        Starts (or reuses) nbflow's local cluster, in a thread: it takes a second and
        must not hold up the scheduler loop.
        """
        target = self.address
        security = self.security
        if target is None:
            cluster = await asyncio.to_thread(
                local_cluster, self.n_workers, self.threads_per_worker, self.processes
            )
            return str(cluster.scheduler_address), security
        if isinstance(target, str):
            return target, security
        scheduler = getattr(target, "scheduler", None)
        if hasattr(target, "scheduler_address"):  # a cluster object
            return str(target.scheduler_address), security or getattr(target, "security", None)
        if scheduler is not None and hasattr(scheduler, "address"):  # a Client
            return str(scheduler.address), security or getattr(target, "security", None)
        msg = (f"DaskExecutor(address=...) takes None, 'tcp://host:port', a distributed.Client "
               f"or a cluster; got {target!r}")
        raise ExecutorError(msg)

    async def _close(self) -> None:
        # Results (finished futures) stay referenced by the run; only unfinished work stops.
        if self._resources is not None:
            self._resources.close()
        if self._tracker is not None:
            await self._tracker.close()

    @property
    def dashboard_link(self) -> str | None:
        """The dask dashboard's URL, when the scheduler runs one."""
        return self._dashboard

    @property
    def client(self) -> Any:
        """The asynchronous ``distributed.Client`` of this run (None before it starts)."""
        return self._client

    def free_slots(self) -> int:
        # dask queues and orders work itself; a bound keeps a cancel cheap.
        running = 0 if self._tracker is None else len(self._tracker.running)
        return 100_000 - running

    # -- submitting ----------------------------------------------------------------------

    def _submit(self, items: Sequence[WorkItem]) -> None:
        """Send ``items``: a fused chain as one task, the others one ``client.map`` per
        group of items that share their options.

        In order: an item chained onto one of the same batch finds its future only once
        that one was sent, so the groups so far go first then.
        """
        groups: dict[tuple[Any, ...], list[Any]] = {}
        units = (fusion.fused_units(items) if any(it.fuse_onto is not None for it in items)
                 else [[it] for it in items])
        for unit in units:
            item = unit[0]
            problem = self._resolve_chained(item)
            if problem is not None and groups:
                self._submit_groups(groups)
                problem = self._resolve_chained(item)
            if problem is not None:  # the rest of its unit is taken back by the scheduler
                self._fail_now(item, problem)
                continue
            key = _group_key(item)
            if len(unit) > 1:  # fused units of the same tasks: one client.map too
                key = ("fused", *key, *(_group_key(it) for it in unit[1:]))
                groups.setdefault(key, []).append(unit)
            else:
                groups.setdefault(key, []).append(item)
        self._submit_groups(groups)

    def _submit_groups(self, groups: dict[tuple[Any, ...], list[Any]]) -> None:
        for key, group in groups.items():
            if key[0] == "fused":
                self._submit_fused(group)
            else:
                self._submit_group(group)
        groups.clear()

    def _submit_fused(self, units: list[list[WorkItem]]) -> None:
        """Send chains of items of the same tasks, each as one dask task
        (:func:`.dask_fused.run_chain`), as one graph update; unfused when a function
        does not pickle or dask refuses them."""
        conn, tracker = self._conn, self._tracker
        assert conn is not None and tracker is not None
        first = units[0]
        packed = [self._pack(item.fn) for item in first]
        if any(fn is None for fn in packed):
            self._submit_unfused(units)
            return
        n = len(units)
        keys = [f"{unit[0].task}-{self._prefix}{next(self._counter):x}" for unit in units]
        inner = [dask_fused.inner_key(key, i) for key in keys for i in range(len(first))]
        conn.wanted.update(dict.fromkeys(inner, tracker.on_inner_report))
        heads = [unit[0] for unit in units]
        specs, columns = _flat_inputs(heads)
        head = heads[0]
        try:
            futures = self._client.map(
                dask_fused.run_chain, [packed[0]] * n, specs,
                [_steps(unit, packed) for unit in units], [conn.topic] * n, keys, *columns,
                key=keys, pure=False, priority=head.priority,
                resources=dict(head.resources) if head.resources else None,
            )
        except Exception:
            for k in inner:
                conn.wanted.pop(k, None)
            self._submit_unfused(units)
            return
        for unit, key, future in zip(units, keys, futures):
            tracker.track_fused(unit, key, future)
        if head.resources and self._resources is not None:
            self._resources.watch(head.task, head.resources, keys)

    def _submit_unfused(self, units: list[list[WorkItem]]) -> None:
        """Send chains item by item, each chained onto the one before."""
        for unit in units:
            for item in unit:
                problem = self._resolve_chained(item)
                if problem is not None:
                    self._fail_now(item, problem)
                    break
                self._submit_group([item])

    def _submit_group(self, items: list[WorkItem]) -> None:
        """Send items of one task with the same options as one graph update."""
        conn, tracker = self._conn, self._tracker
        assert conn is not None and tracker is not None
        first = items[0]
        fn = self._pack(first.fn)
        if fn is None:  # it does not pickle: say which global or closure variable is why
            for item in items:
                self._fail_now(item, self._unsendable(item) or ExecutorError(
                    f"the function of task {item.label!r} cannot be sent to dask workers"))
            return
        keys = [f"{first.task}-{self._prefix}{next(self._counter):x}" for _ in items]
        # wanted before submitting: a report may come back before client.map returns
        conn.wanted.update(dict.fromkeys(keys, tracker.on_report))
        n = len(items)
        specs, columns = _flat_inputs(items)
        try:
            futures = self._client.map(
                dask_worker.run_item, [fn] * n, specs, [conn.topic] * n, keys, *columns,
                key=keys, pure=False, priority=first.priority,
                resources=dict(first.resources) if first.resources else None,
            )
        except Exception as exc:
            # Serializing the inputs failed (dask does it as it submits): name the culprit.
            # Checking up front instead would pickle every input twice.
            for key in keys:
                conn.wanted.pop(key, None)
            self._refused(items, exc)
            return
        tracker.track(items, keys, futures)
        if first.resources and self._resources is not None:
            self._resources.watch(first.task, first.resources, keys)

    def _pack(self, fn: Callable[..., Any]) -> dask_worker.Packed | None:
        """``fn`` pickled (once per run and function); None when it cannot be."""
        entry = self._packed.get(id(fn))
        if entry is not None and entry[0] is fn:
            return entry[1]
        try:
            packed = dask_worker.Packed(pickling.dumps(fn))
        except Exception:
            return None
        self._packed[id(fn)] = (fn, packed)  # fn kept alive: ids stay unique
        return packed

    def _refused(self, items: list[WorkItem], exc: Exception) -> None:
        """Fail the items that cannot travel (with why); submit the others again."""
        fine = []
        for item in items:
            problem = self._unsendable(item)
            if problem is None:
                fine.append(item)
            else:
                self._fail_now(item, problem)
        if fine and len(fine) < len(items):
            self._submit_group(fine)
            return
        for item in fine:
            self._fail_now(item, ExecutorError(
                f"dask refused task {item.label!r}: {type(exc).__name__}: {exc}"))

    def _resolve_chained(self, item: WorkItem) -> Exception | None:
        """Replace :class:`ResultOf` inputs (also inside :class:`ResultsOf`) by the futures
        of those items; an error when one of them is gone."""
        assert self._tracker is not None
        running = self._tracker.futures
        for name, value in item.kwargs.items():
            kind = type(value)
            if kind is ResultOf:
                future = running.get(value.id)
                if future is None:  # its upstream failed or was cancelled a moment ago
                    return ExecutorError(f"the input {name!r} of task {item.label!r} is gone")
                item.kwargs[name] = future
            elif kind is ResultsOf:
                futures = [running.get(v.id) if type(v) is ResultOf else v for v in value]
                if any(f is None for f, v in zip(futures, value) if type(v) is ResultOf):
                    return ExecutorError(f"the input {name!r} of task {item.label!r} is gone")
                item.kwargs[name] = futures
        return None

    def _unsendable(self, item: WorkItem) -> Exception | None:
        """Why ``item`` cannot travel to a worker (its function or an input), if it cannot."""
        checks: list[tuple[str, Any]] = [("function", item.fn)]
        checks += [(f"input {name!r}", v) for name, v in item.kwargs.items()
                   if not is_data_ref(v)]
        for what, value in checks:
            try:
                pickling.dumps(value)
            except Exception as exc:
                return TypeError(pickling.unsendable_message(
                    item.label, what, value, exc, "dask workers"))
        return None

    def _fail_now(self, item: WorkItem, error: Exception) -> None:
        assert self._tracker is not None
        self._tracker.fail_now(item, error)

    def _cancel(self, ids: list[Hashable]) -> None:
        if self._tracker is not None:
            self._tracker.cancel(ids)

    # -- data ------------------------------------------------------------------------------

    def owns(self, value: Any) -> bool:
        if dask_worker.is_pick(value):  # an inner result of a fused chain
            value = value[1]
        return is_future(value) and value.client is self._client

    async def fetch(self, ref: Any) -> Any:
        """The value behind ``ref`` (a future, a list with futures, a branch input)."""
        return (await self.fetch_many([ref]))[0]

    async def fetch_many(self, refs: list[Any]) -> list[Any]:
        """Values for ``refs`` with one gather (each future is fetched once)."""
        if not any(has_future(r) for r in refs):
            return [dask_worker.pick(r) if dask_worker.is_pick(r) else r for r in refs]
        client = self._client or client_of(refs)
        try:
            values = await client.gather(self._cut_on_workers(client, refs), errors="raise")
        except CancelledError as exc:  # dask dropped them, or lost its scheduler
            raise unavailable(refs, client, exc) from exc
        except OSError as exc:  # the scheduler went away while they were gathered
            if str(getattr(client, "status", "")) == "running":
                raise
            raise unavailable(refs, client, exc) from exc
        return [unpick(v) for v in values]

    async def split(self, ref: Any) -> list[Any]:
        """Branch inputs ``[_PICK, future, i]``: each branch cuts its item out on a worker."""
        if not is_future(ref) and not (dask_worker.is_pick(ref) and has_future(ref)):
            return await super().split(ref)
        client = self._client
        n = await client.submit(dask_worker.length, ref, pure=False, key=self._key("split"))
        return [[dask_worker._PICK, ref, i] for i in range(int(n))]

    async def apply(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call ``fn`` (a ``run_if``) on a worker, next to the data; only its answer returns."""
        if not any(has_future(v) for v in kwargs.values()):
            return await super().apply(fn, {k: unpick(v) for k, v in kwargs.items()})
        fut = self._client.submit(dask_worker.apply, fn, kwargs, pure=False,
                                  key=self._key("run_if"))
        return await fut

    async def cacheable(self, refs: list[Any]) -> list[tuple[bool, Any]]:
        """Gather the results no larger than :attr:`cache_limit` (one gather)."""
        sizes = {} if self._tracker is None else self._tracker.sizes
        small = [i for i, r in enumerate(refs)
                 if 0 <= sizes.get(_size_key(r), -1) <= self.cache_limit]
        out: list[tuple[bool, Any]] = [(False, None)] * len(refs)
        if small:
            values = await self._client.gather(
                self._cut_on_workers(self._client, [refs[i] for i in small]), errors="skip")
            for i, v in zip(small, values):
                out[i] = (True, unpick(v))
        return out

    def _cut_on_workers(self, client: Any, refs: list[Any]) -> list[Any]:
        """``refs``, with each one that picks items out of a large fused result (over
        :data:`CUT_LIMIT` bytes in all) replaced by a future of those items, cut out on a
        worker: only they travel, not the other results fused with them. (A cut takes a
        free worker thread; a small fused result travels whole instead.)"""
        out = list(refs)
        sizes = {} if self._tracker is None else self._tracker.fused_bytes
        for n, ref in enumerate(refs):
            if any(sizes.get(k, 0) > CUT_LIMIT for k in _fused_keys(ref)):
                out[n] = client.submit(dask_worker.picked, ref, pure=False, key=self._key("pick"))
        return out

    def _key(self, what: str) -> str:
        return f"nbflow-{what}-{self._prefix}{next(self._counter):x}"

    def __repr__(self) -> str:
        where = "local cluster" if self.address is None else repr(
            self.address if isinstance(self.address, str) else type(self.address).__name__)
        return f"DaskExecutor({where})"


# -- helpers -----------------------------------------------------------------------------------


#: bytes of a fused task's results above which an inner result is cut out on a worker
#: before it is read (see DaskExecutor._cut_on_workers)
CUT_LIMIT = 1_000_000


def _fused_keys(ref: Any) -> set[str]:
    """The keys of the futures that ``ref`` picks items out of (alone, nested, in a list)."""
    out: set[str] = set()
    stack = [ref]
    while stack:
        v = stack.pop()
        if dask_worker.is_pick(v):
            if is_future(v[1]):
                out.add(str(v[1].key))
            else:
                stack.append(v[1])
        elif type(v) is list:
            stack.extend(v)
    return out


def _size_key(ref: Any) -> str:
    """The key under which a result's size was reported (a fused chain's inner result
    has its own)."""
    if dask_worker.is_pick(ref) and is_future(ref[1]):
        return dask_fused.inner_key(str(ref[1].key), ref[2])
    return str(getattr(ref, "key", ""))


def _flat_inputs(items: list[WorkItem]) -> tuple[list[dask_worker.Call], list[list[Any]]]:
    """``run_item``'s :class:`~.dask_worker.Call` per item, and a column of values per input.

    Items of a group share their input names. A branch input ``[_PICK, source, i]``
    goes as ``source`` with ``i`` in the spec, so that every future is a top-level
    argument (see :func:`dask_worker.run_item`).
    """
    names = tuple(items[0].kwargs)
    columns: list[list[Any]] = [[] for _ in names]
    specs = []
    for item in items:
        picks = []
        for position, name in enumerate(names):
            value = item.kwargs[name]
            if dask_worker.is_pick(value):
                picks.append((position, value[2]))
                value = value[1]
            columns[position].append(value)
        specs.append(dask_worker.Call(item.task, item.branch, names, tuple(picks), _job(item)))
    return specs, columns


def _group_key(item: WorkItem) -> tuple[Any, ...]:
    """Items with the same key go to dask as one ``client.map``."""
    resources = tuple(sorted(item.resources.items())) if item.resources else None
    return (id(item.fn), item.task, item.priority, resources, tuple(item.kwargs))


def _steps(unit: list[WorkItem], packed: list[Any]) -> tuple[dask_fused.Step, ...]:
    """The items of a fused chain after its first, as :class:`.dask_fused.Step` s."""
    steps = []
    for item, fn in zip(unit[1:], packed[1:]):
        chained = fusion.chained_input(item)
        names = tuple(n for n in item.kwargs if n != chained)
        steps.append(dask_fused.Step(fn, item.task, names, tuple(item.kwargs[n] for n in names),
                                     chained, _job(item)))
    return tuple(steps)


def _job(item: WorkItem) -> Any:
    """The run's job directory as a worker sees it (None without one)."""
    return None if item.board is None or item.board.job is None else item.board.job.for_worker()
