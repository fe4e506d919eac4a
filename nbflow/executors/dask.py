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
through the kernel per hop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from itertools import count
from typing import Any


from ..capture import Capture
from ..errors import ExecutorError
from ..values import Failed, Skipped
from . import dask_worker, pickling
from .base import Executor, Outcome, ResultOf, ResultsOf, WorkItem
from .dask_cluster import Connection, connect, dashboard_link, local_cluster

logger = logging.getLogger(__name__)

_run_ids = count()

#: seconds between two looks at running futures that might have ended without a report
SWEEP_INTERVAL = 0.2


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
    cache_limit
        Results up to this many bytes (as reported by ``dask.sizeof`` on the
        worker) are gathered into the flow's result cache when they finish;
        larger ones stay on the cluster only and are recomputed by a later run
        that needs them.
    """

    name = "dask"
    remote = True
    chains = True

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
    ) -> None:
        super().__init__()
        self.address = address
        self.security = security
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.connect_timeout = connect_timeout
        self.cache_limit = cache_limit
        self._reset()

    def _reset(self) -> None:
        self._conn: Connection | None = None
        self._prefix = f"{next(_run_ids):x}{uuid.uuid4().hex[:8]}"
        self._counter = count()
        #: dask key -> (work item, future) of items running now
        self._running: dict[str, tuple[WorkItem, Any]] = {}
        self._keys: dict[Hashable, str] = {}
        #: work item id -> future, until its outcome reached the scheduler (for ResultOf)
        self._futures: dict[Hashable, Any] = {}
        #: id(function) -> (function, its Packed bytes): each function pickled once a run
        self._packed: dict[int, tuple[Any, dask_worker.Packed]] = {}
        #: failed items waiting for their future's exception, by key
        self._failing: dict[str, asyncio.Task[None]] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        #: keys seen finished without a report by the last sweep
        self._finished_seen: set[str] = set()
        self._outcomes: list[Outcome] = []
        self._flush_scheduled = False
        #: sizes of finished results, by key (for the cache decision)
        self._sizes: dict[str, int] = {}
        self._client: Any = None
        self._address: str | None = None
        self._dashboard: str | None = None
        self._lost: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def _start(self) -> None:
        address, security = await self._scheduler_address()
        self._conn = await connect(address, security, self.connect_timeout)
        self._client = self._conn.client
        self._address = address
        self._dashboard = dashboard_link(self._conn)

    async def _scheduler_address(self) -> tuple[str, Any]:
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
        pending = [fut for _, fut in self._running.values()]
        for task in self._failing.values():
            task.cancel()
        self._failing.clear()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        if self._conn is not None:
            for key in self._running:
                self._conn.wanted.pop(key, None)
        self._running.clear()
        if pending and self._client is not None and self._lost is None:
            try:
                await self._client.cancel(pending)
            except Exception:
                logger.debug("cancelling futures at close failed", exc_info=True)

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
        return 100_000 - len(self._running)

    # -- submitting ----------------------------------------------------------------------

    def _submit(self, items: Sequence[WorkItem]) -> None:
        groups: dict[tuple[Any, ...], list[WorkItem]] = {}
        for item in items:
            problem = self._resolve_chained(item)
            if problem is not None:
                self._fail_now(item, problem)
                continue
            resources = tuple(sorted(item.resources.items())) if item.resources else None
            key = (id(item.fn), item.task, item.priority, resources, tuple(item.kwargs))
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            self._submit_group(group)

    def _submit_group(self, items: list[WorkItem]) -> None:
        assert self._conn is not None
        first = items[0]
        fn = self._pack(first.fn)
        if fn is None:  # it does not pickle: say which global or closure variable is why
            for item in items:
                self._fail_now(item, self._unsendable(item) or ExecutorError(
                    f"the function of task {item.label!r} cannot be sent to dask workers"))
            return
        keys = [f"{first.task}-{self._prefix}{next(self._counter):x}" for _ in items]
        conn = self._conn
        conn.wanted.update(dict.fromkeys(keys, self._on_report))
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
        for item, key, fut in zip(items, keys, futures):
            self._running[key] = (item, fut)
            self._keys[item.id] = key
            self._futures[item.id] = fut
        if self._sweep_handle is None:
            self._schedule_sweep()

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
        of those items."""
        for name, value in item.kwargs.items():
            kind = type(value)
            if kind is ResultOf:
                future = self._futures.get(value.id)
                if future is None:  # its upstream failed or was cancelled a moment ago
                    return ExecutorError(f"the input {name!r} of task {item.label!r} is gone")
                item.kwargs[name] = future
            elif kind is ResultsOf:
                futures = [self._futures.get(v.id) if type(v) is ResultOf else v for v in value]
                if any(f is None for f, v in zip(futures, value) if type(v) is ResultOf):
                    return ExecutorError(f"the input {name!r} of task {item.label!r} is gone")
                item.kwargs[name] = futures
        return None

    def _unsendable(self, item: WorkItem) -> Exception | None:
        """Why ``item`` cannot travel to a worker (its function or an input), if it cannot."""
        checks: list[tuple[str, Any]] = [("function", item.fn)]
        checks += [(f"input {name!r}", v) for name, v in item.kwargs.items()
                   if not _is_data_ref(v)]
        for what, value in checks:
            try:
                pickling.dumps(value)
            except Exception as exc:
                return TypeError(pickling.unsendable_message(
                    item.label, what, value, exc, "dask workers"))
        return None

    def _fail_now(self, item: WorkItem, error: Exception) -> None:
        now = time.time()
        failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
        self._queue_outcome(Outcome(item.id, False, failure, now, now, "kernel (not sent)"))

    # -- completion ----------------------------------------------------------------------
    #
    # A task's report (see dask_worker) is its outcome: a successful report means the
    # result is on a worker, and the future is valid to pass downstream at once.
    # That needs no asyncio task per future, which cost a mapped task's branches more
    # than the state machine did. A failure waits for the future's exception. Items
    # without a report (a worker that died, a scheduler that is gone, a cancel by
    # dask) are found by a sweep of the futures' states.

    def _on_report(self, report: dict[str, Any]) -> None:
        key = str(report.get("key"))
        entry = self._running.get(key)
        if entry is None:
            return  # cancelled by nbflow meanwhile
        item, fut = entry
        if report.get("ok"):
            self._forget(item, key)
            if "nbytes" in report:
                self._sizes[key] = int(report["nbytes"])
            self._queue_outcome(Outcome(
                item.id, True, fut, float(report["started"]), float(report["ended"]),
                report.get("worker"), _capture(report)))
        elif key not in self._failing:
            assert self._loop is not None
            self._failing[key] = self._loop.create_task(self._failed(item, key, fut, report))

    async def _failed(self, item: WorkItem, key: str, fut: Any, report: dict[str, Any]) -> None:
        """Wait for a failed item's exception (it follows its report), then report it."""
        state: Any = fut._state  # distributed has no public "wait without fetching" on a Future
        while state.status not in ("finished", "error", "cancelled", "lost"):
            await state._get_event().wait()
        self._failing.pop(key, None)
        if key in self._running:
            self._settle(item, key, fut, report)

    def _settle(self, item: WorkItem, key: str, fut: Any, report: dict[str, Any]) -> None:
        """The outcome of an item from its future's final state (and its report, if any)."""
        self._forget(item, key)
        state: Any = fut._state
        now = time.time()  # without a report, when it ran is unknown (the run has when it was sent)
        started = float(report.get("started", now))
        ended = float(report.get("ended", now))
        where = report.get("worker")
        output = _capture(report)
        if state.status == "finished":  # finished without a report: nothing more to say
            self._queue_outcome(Outcome(item.id, True, fut, started, ended, where, output))
            return
        error = self._error_of(item, state)
        text = report.get("traceback") or _format(error)
        failure = Failed(item.task, error, text, item.branch, item.attempt)
        self._queue_outcome(Outcome(item.id, False, failure, started, ended, where, output))
        fut.release()

    def _forget(self, item: WorkItem, key: str) -> None:
        self._running.pop(key, None)
        self._keys.pop(item.id, None)
        self._finished_seen.discard(key)
        if self._conn is not None:
            self._conn.wanted.pop(key, None)

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        # a sweep costs about a microsecond per running item: rarer for huge maps
        interval = max(SWEEP_INTERVAL, len(self._running) / 50_000)
        self._sweep_handle = self._loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Settle items whose future ended without a report (see the section comment)."""
        self._sweep_handle = None
        if self._closed:
            return
        for key, (item, fut) in list(self._running.items()):
            if key in self._failing:
                continue
            status = fut._state.status
            if status in ("error", "cancelled", "lost"):
                self._settle(item, key, fut, {})
            elif status == "finished":  # its report may be on its way: one more sweep
                if key in self._finished_seen:
                    self._settle(item, key, fut, {})
                else:
                    self._finished_seen.add(key)
        if self._running:
            self._schedule_sweep()

    def _error_of(self, item: WorkItem, state: Any) -> BaseException:
        error = state.exception
        if state.status == "cancelled":
            client = self._client
            status = str(getattr(client, "status", ""))
            if status not in ("running", "connecting"):
                self._lost = f"the dask scheduler at {self._address} is gone (client {status})"
                return ExecutorError(f"task {item.label!r} did not finish: {self._lost}")
            return ExecutorError(f"dask cancelled task {item.label!r}: {error}")
        if type(error).__name__ == "KilledWorker":
            return ExecutorError(
                f"task {item.label!r} was running on dask workers that died each time it "
                f"ran ({error}); it may use more memory than a worker has, or crash the "
                "interpreter")
        return error if isinstance(error, BaseException) else RuntimeError(repr(error))

    def _queue_outcome(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._outcomes = self._outcomes, []
        for outcome in batch:  # from now on the scheduler hands out the future itself
            self._futures.pop(outcome.id, None)
        if batch and self._on_done is not None and not self._closed:
            self._on_done(batch)

    def _cancel(self, ids: list[Hashable]) -> None:
        futures = []
        for id_ in ids:
            key = self._keys.pop(id_, None)
            if key is None:
                continue
            entry = self._running.pop(key, None)
            self._futures.pop(id_, None)
            failing = self._failing.pop(key, None)
            if failing is not None:
                failing.cancel()
            if self._conn is not None:
                self._conn.wanted.pop(key, None)
            if entry is not None:
                futures.append(entry[1])
        if futures and self._client is not None and self._loop is not None:
            task = self._loop.create_task(self._client.cancel(futures, force=True))
            task.add_done_callback(_log_failure)

    # -- data ------------------------------------------------------------------------------

    def owns(self, value: Any) -> bool:
        return _is_future(value) and value.client is self._client

    async def fetch(self, ref: Any) -> Any:
        """The value behind ``ref`` (a future, a list with futures, a branch input)."""
        return (await self.fetch_many([ref]))[0]

    async def fetch_many(self, refs: list[Any]) -> list[Any]:
        """Values for ``refs`` with one gather (each future is fetched once)."""
        if not any(_has_future(r) for r in refs):
            return [dask_worker.pick(r) if dask_worker.is_pick(r) else r for r in refs]
        client = self._client or _client_of(refs)
        values = await client.gather(refs, errors="raise")
        return [_unpick(v) for v in values]

    async def split(self, ref: Any) -> list[Any]:
        """Branch inputs ``[_PICK, future, i]``: each branch cuts its item out on a worker."""
        if not _is_future(ref):
            return await super().split(ref)
        client = self._client
        n = await client.submit(dask_worker.length, ref, pure=False, key=self._key("split"))
        return [[dask_worker._PICK, ref, i] for i in range(int(n))]

    async def apply(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call ``fn`` (a ``run_if``) on a worker, next to the data; only its answer returns."""
        if not any(_has_future(v) for v in kwargs.values()):
            return await super().apply(fn, {k: _unpick(v) for k, v in kwargs.items()})
        fut = self._client.submit(dask_worker.apply, fn, kwargs, pure=False,
                                  key=self._key("run_if"))
        return await fut

    async def cacheable(self, refs: list[Any]) -> list[tuple[bool, Any]]:
        """Gather the results no larger than :attr:`cache_limit` (one gather)."""
        small = [i for i, r in enumerate(refs)
                 if 0 <= self._sizes.get(str(getattr(r, "key", "")), -1) <= self.cache_limit]
        out: list[tuple[bool, Any]] = [(False, None)] * len(refs)
        if small:
            values = await self._client.gather([refs[i] for i in small], errors="skip")
            for i, v in zip(small, values):
                out[i] = (True, v)
        return out

    def _key(self, what: str) -> str:
        return f"nbflow-{what}-{self._prefix}{next(self._counter):x}"

    def __repr__(self) -> str:
        where = "local cluster" if self.address is None else repr(
            self.address if isinstance(self.address, str) else type(self.address).__name__)
        return f"DaskExecutor({where})"


# -- helpers -----------------------------------------------------------------------------------


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
        specs.append(dask_worker.Call(item.task, item.branch, names, tuple(picks)))
    return specs, columns


def _is_future(value: Any) -> bool:
    return type(value).__name__ == "Future" and hasattr(value, "key") and hasattr(value, "client")


def _has_future(value: Any) -> bool:
    if _is_future(value):
        return True
    if type(value) in (list, tuple):
        return any(_has_future(v) for v in value)
    return False


def _is_data_ref(value: Any) -> bool:
    """A value that is not pickled by nbflow: futures, branch inputs, Failed/Skipped."""
    return _has_future(value) or isinstance(value, (Failed, Skipped, ResultOf, ResultsOf))


def _unpick(value: Any) -> Any:
    if dask_worker.is_pick(value):
        return dask_worker.pick(value)
    if type(value) is list and any(dask_worker.is_pick(v) for v in value):
        return [dask_worker.pick(v) for v in value]
    return value


def _client_of(refs: list[Any]) -> Any:
    stack = list(refs)
    while stack:
        v = stack.pop()
        if _is_future(v):
            return v.client
        if type(v) in (list, tuple):
            stack.extend(v)
    raise ExecutorError("no dask future to fetch")  # pragma: no cover


def _capture(report: dict[str, Any]) -> Capture | None:
    if not (report.get("stdout") or report.get("stderr") or report.get("displays")):
        return None
    out = Capture()
    out.stdout = list(report.get("stdout") or [])
    out.stderr = list(report.get("stderr") or [])
    out.displays = list(report.get("displays") or [])
    return out


def _format(error: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("cancelling dask futures failed: %s", task.exception())
