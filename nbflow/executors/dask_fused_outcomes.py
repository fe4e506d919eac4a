"""The outcomes of fused chains (:mod:`.dask_fused`): one dask future, an outcome per inner task.

:class:`FusedOutcomes` is a part of :class:`~.dask_outcomes.OutcomeTracker`
(it inherits it). A fused chain is tracked under its dask key like any item
(with its first inner item in ``running``), and each inner item under its own
id (``keys``, ``futures``), so a cancel or a chained consumer finds it. Its
reports arrive under ``<key>#<position>``:

- a successful report is that inner item's outcome, its value the reference
  ``[_PICK, future, position]`` into the tuple the chain returns;
- a failed report carries the exception; the items after it never run and
  get no outcome: the state machine takes them back (they were chained onto
  the failed one) and cancels them here;
- the sweep settles a chain whose future ended without every report: a future
  that failed (a worker died) fails the first inner item not reported yet.

The future is cancelled on the cluster only when every inner item was cancelled
and none succeeded (a successful item's result lives in it).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from ..values import Failed
from .base import Outcome, WorkItem
from .dask_fused import inner_key
from .dask_worker import _PICK


@dataclass(eq=False)
class FusedChain:
    """The inner items of one fused dask task and what became of them."""

    items: list[WorkItem]
    future: Any
    #: positions of the items still waiting for an outcome (not cancelled)
    pending: set[int] = field(default_factory=set)
    #: item id -> position
    position: dict[Hashable, int] = field(default_factory=dict)
    succeeded: bool = False
    #: the position where the chain stopped with a failure (the rest never ran)
    failed_at: int | None = None


class FusedOutcomes:
    """The fused-chain half of :class:`~.dask_outcomes.OutcomeTracker` (see the module doc)."""

    # provided by OutcomeTracker
    running: dict[str, tuple[WorkItem, Any]]
    keys: dict[Hashable, str]
    futures: dict[Hashable, Any]
    sizes: dict[str, int]
    _conn: Any

    def _init_fused(self) -> None:
        #: fused key -> its chain
        self.fused: dict[str, FusedChain] = {}
        #: fused key -> the bytes of the results it holds so far (the reported sizes)
        self.fused_bytes: dict[str, int] = {}

    def _queue(self, outcome: Outcome) -> None:  # pragma: no cover - OutcomeTracker's
        raise NotImplementedError

    def _schedule_sweep(self) -> None:  # pragma: no cover - OutcomeTracker's
        raise NotImplementedError

    def _sweep_handle_set(self) -> bool:  # pragma: no cover - OutcomeTracker's
        raise NotImplementedError

    def _error_of(self, item: WorkItem, fut: Any) -> BaseException:  # pragma: no cover
        raise NotImplementedError

    def track_fused(self, items: list[WorkItem], key: str, fut: Any) -> None:
        """Follow a fused chain just submitted as ``fut`` under ``key`` (the caller put
        :meth:`on_inner_report` in ``wanted`` for every inner key before submitting)."""
        chain = FusedChain(items, fut, set(range(len(items))))
        self.fused[key] = chain
        self.running[key] = (items[0], fut)
        for position, item in enumerate(items):
            chain.position[item.id] = position
            self.keys[item.id] = key
            self.futures[item.id] = [_PICK, fut, position]
        if not self._sweep_handle_set():
            self._schedule_sweep()

    def on_inner_report(self, report: dict[str, Any]) -> None:
        """A worker's report on one inner item of a fused chain."""
        key, _, where = str(report.get("key")).rpartition("#")
        chain = self.fused.get(key)
        position = int(where)
        if chain is None or position not in chain.pending:
            return  # cancelled meanwhile
        item = chain.items[position]
        started, ended = float(report["started"]), float(report["ended"])
        from .dask_outcomes import _capture

        if report.get("ok"):
            chain.succeeded = True
            if "nbytes" in report:
                nbytes = int(report["nbytes"])
                self.sizes[inner_key(key, position)] = nbytes
                self.fused_bytes[key] = self.fused_bytes.get(key, 0) + nbytes
            value: Any = [_PICK, chain.future, position]
            ok = True
        else:
            chain.failed_at = position
            error = _unpickled_error(report)
            value = Failed(item.task, error, str(report.get("traceback", "")), item.branch,
                           item.attempt)
            ok = False
        self._settle_inner(key, chain, position)
        self._queue(Outcome(item.id, ok, value, started, ended, report.get("worker"),
                            _capture(report)))

    def _settle_inner(self, key: str, chain: FusedChain, position: int) -> None:
        """Item ``position`` has its outcome (or was cancelled): stop following it."""
        chain.pending.discard(position)
        self.keys.pop(chain.items[position].id, None)
        self._conn.wanted.pop(inner_key(key, position), None)
        if not chain.pending:
            self.running.pop(key, None)
            del self.fused[key]

    def _sweep_fused(self, key: str, chain: FusedChain, status: str, seen: bool) -> bool:
        """Settle a chain whose future ended without every report; True when it did.

        ``seen``: the last sweep saw it finished already (its reports had time to come).
        """
        if status == "finished":
            if not seen:
                return False
            now = time.time()
            stop = len(chain.items) if chain.failed_at is None else chain.failed_at
            for position in sorted(p for p in chain.pending if p < stop):
                chain.succeeded = True
                item = chain.items[position]
                self._settle_inner(key, chain, position)
                self._queue(Outcome(item.id, True, [_PICK, chain.future, position], now, now))
        elif status in ("error", "cancelled", "lost") and chain.pending:
            position = min(chain.pending)
            if chain.failed_at is None or position < chain.failed_at:
                item = chain.items[position]
                error = self._error_of(item, chain.future)
                now = time.time()
                self._settle_inner(key, chain, position)
                self._queue(Outcome(item.id, False, Failed.from_exception(
                    item.task, error, item.branch, item.attempt), now, now))
        else:
            return False
        self.running.pop(key, None)  # the rest waits for the state machine's cancel
        return True

    def fail_fused(self, key: str, error: Exception, where: str) -> Any:
        """Fail the first inner item not settled (the chain cannot start); the future to
        cancel, if no item succeeded."""
        chain = self.fused.get(key)
        if chain is None or not chain.pending:
            return None
        position = min(chain.pending)
        item = chain.items[position]
        now = time.time()
        self._settle_inner(key, chain, position)
        self.running.pop(key, None)
        failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
        self._queue(Outcome(item.id, False, failure, now, now, where))
        return None if chain.succeeded else chain.future

    def cancel_inner(self, id_: Hashable, key: str) -> Any:
        """Forget inner item ``id_`` of chain ``key``; the future to cancel on the cluster,
        when no inner item is left and none succeeded."""
        chain = self.fused.get(key)
        self.futures.pop(id_, None)
        if chain is None:
            return None
        position = chain.position[id_]
        if position in chain.pending:
            self._settle_inner(key, chain, position)
        if chain.pending or chain.succeeded:
            return None
        self.running.pop(key, None)
        return chain.future

    def _close_fused(self) -> None:
        for key, chain in self.fused.items():
            for position in chain.pending:
                self._conn.wanted.pop(inner_key(key, position), None)
            if chain.succeeded:  # its results are the run's: the future stays
                self.running.pop(key, None)


def _unpickled_error(report: dict[str, Any]) -> BaseException:
    """The exception a failed inner item's report carries (a stand-in if it cannot load)."""
    data = report.get("error")
    if data:
        try:
            error = pickle.loads(data)
            if isinstance(error, BaseException):
                return error
        except Exception:
            pass
    text = str(report.get("traceback", "")).strip().splitlines()
    return RuntimeError(text[-1] if text else "the task failed on a dask worker")
