"""Which tasks may be sent to a chaining executor (dask) ahead of their upstreams.

A round trip through the kernel per hop costs a dask chain milliseconds per
task. An executor that :attr:`~nbflow.executors.Executor.chains` can instead
take a task whose upstreams are still running on it, with
:class:`~nbflow.executors.ResultOf` references to their results, and chain
the hops itself. The state machine stays in charge of the run: a task sent
ahead is ``pending`` until its upstreams finished *here*, and only then is
its outcome (which may have arrived already) applied. When an upstream
attempt fails, the tasks chained below it are taken back and go the ordinary
way (skipped, or sent again after a retry).

Element-wise maps chain *per branch*: branch i of a task mapped element-wise
over another may go ahead as soon as branch i of its source was handed over
(``handed_over``, ``ready_branches``, ``branch_below``); its outcome, if it
arrives early, waits in :attr:`ChainPlanner.early`.

:class:`ChainPlanner` only decides; the machine (``transitions.py``) moves
the records. The machine consults it at named hooks: ``handed_over`` (an
item went to an executor), ``ready_to_chain`` (for a
:class:`~nbflow.messages.ChainAhead` stimulus) and ``chained_below`` (an
upstream attempt failed, or its task was cancelled).
"""

from __future__ import annotations

from .messages import Finished
from .records import QUEUED_AHEAD, SENT_AHEAD, WAITING, TaskRecord
from .states import FINAL, OK

#: the phases of an item chained ahead
AHEAD = (QUEUED_AHEAD, SENT_AHEAD)


class ChainPlanner:
    """Static eligibility of each task, and the tasks to look at after a hand-over."""

    def __init__(self, records: list[TaskRecord], lanes: set[int],
                 lane_of: list[int] | None) -> None:
        """``lanes``: the executor lanes that chain; ``lane_of``: each task's lane.

        A task qualifies when it is synchronous, not mapped, has no ``run_if``,
        ``timeout`` or ``run_on`` other than "success", no upstream fed by a stream
        (``streams.py``: its branches keep coming), and every dependency is an
        input computed by a synchronous task on the same lane (an ``async def``
        task runs on the scheduler loop, not on the lane's executor).
        """
        self._records = records
        lane_of = lane_of or [0] * len(records)
        chainable = []
        #: element-wise maps whose branches may go ahead of their source branches
        branchable: list[bool] = []
        #: fed by a stream: a stream, or an element-wise map of one (branches keep coming,
        #: so "every branch handed over" is never true before the stream ends)
        fed: list[bool] = []
        for rec in records:
            pt = rec.pt
            fed.append(pt.stream or (pt.elementwise and fed[pt.map_source]))  # type: ignore[index]
            o = pt.task.options
            lane = lane_of[pt.index]
            chainable.append(
                lane in lanes and bool(rec.dep_idx) and pt.map_source is None
                and not any(fed[d] for d in rec.dep_idx)
                and not pt.task.is_async and o.run_if is None and o.timeout is None
                and o.run_on == "success"
                and set(rec.dep_idx) == {d for _, d in rec.up_idx}
                and all(lane_of[d] == lane and not records[d].pt.task.is_async
                        for d in rec.dep_idx)
            )
            src = pt.map_source
            branchable.append(
                lane in lanes and pt.elementwise and src is not None and not fed[src]
                and not rec.dep_idx and {d for _, d in rec.up_idx} == {src}
                and not pt.task.is_async and o.run_if is None and o.timeout is None
                and o.run_on == "success" and o.batch_size is None and o.max_parallel is None
                and lane_of[src] == lane and not records[src].pt.task.is_async
            )
        self._chainable = chainable
        self._branchable = branchable
        #: True when some task of the run can be chained at all
        self.any = any(chainable) or any(branchable)
        #: tasks to look at, because an upstream of theirs was just handed over
        self._candidates: list[int] = []
        #: (task, branch) to look at, because that branch of its source was handed over
        self._branch_candidates: list[tuple[int, int]] = []
        #: (task, branch) -> the outcome of a branch sent ahead that came before its source's
        self.early: dict[tuple[int, int], Finished] = {}

    def chainable(self, t: int) -> bool:
        """True when task ``t`` may be sent ahead of its upstreams at all (static)."""
        return self._chainable[t]

    def branchable(self, t: int) -> bool:
        """True when the branches of task ``t`` may go ahead of their source's (static)."""
        return self._branchable[t]

    @property
    def has_candidates(self) -> bool:
        return bool(self._candidates or self._branch_candidates)

    def handed_over(self, rec: TaskRecord, i: int = 0) -> None:
        """Hook: item ``i`` of ``rec`` went to its executor, so the tasks below it (for a
        mapped task: once the last branch went), and the branches i of element-wise maps
        over it, may be chainable now."""
        if not rec.mapped or rec.in_flight + rec.done == rec.n:
            self._candidates += rec.pt.children
        if rec.mapped:
            for c in rec.ew_children:
                if self._branchable[c]:
                    self._branch_candidates.append((c, i))

    def ready_branches(self) -> list[tuple[TaskRecord, int]]:
        """Hook: the branch candidates that may go ahead now."""
        candidates, self._branch_candidates = self._branch_candidates, []
        return [(self._records[t], i) for t, i in candidates
                if self.can_chain_branch(self._records[t], i)]

    def can_chain_branch(self, rec: TaskRecord, i: int) -> bool:
        """Branch ``i`` of ``rec`` waits, and its source's branch i is handed over."""
        items = rec.items
        if (not self._branchable[rec.pt.index] or items is None or i >= len(items)
                or items[i].phase != WAITING or rec.state in FINAL):
            return False
        src = self._records[rec.pt.map_source].items  # type: ignore[index]
        return src is not None and i < len(src) and src[i].phase in ("running", SENT_AHEAD)

    def branch_below(self, rec: TaskRecord, i: int) -> list[TaskRecord]:
        """Hook: the element-wise maps whose branch ``i`` is chained ahead onto ``rec``'s
        branch ``i``, directly or further down."""
        out: list[TaskRecord] = []
        stack = [rec]
        while stack:
            for child in stack.pop().ew_children:
                crec = self._records[child]
                items = crec.items
                if items is not None and i < len(items) and items[i].phase in AHEAD:
                    out.append(crec)
                    stack.append(crec)
        return out

    def ready_to_chain(self) -> list[TaskRecord]:
        """Hook: the candidates whose upstreams are all handed over (and none failed)."""
        candidates, self._candidates = self._candidates, []
        return [self._records[t] for t in dict.fromkeys(candidates)
                if self.can_chain_now(self._records[t])]

    def can_chain_now(self, rec: TaskRecord) -> bool:
        """Static eligibility, and every upstream is handed over or done (one not done)."""
        if (not self._chainable[rec.pt.index] or rec.activated
                or rec.items[0].phase != WAITING):  # type: ignore[index]
            return False
        in_flight = False
        for d in rec.dep_idx:
            dep = self._records[d]
            if (dep.items is not None and not dep.mapped and dep.items[0].phase == SENT_AHEAD) or (
                    dep.state == "running" and (not dep.mapped or _handed_over(dep))):
                in_flight = True
            elif dep.state not in OK:
                return False
        return in_flight

    def chained_below(self, rec: TaskRecord) -> list[TaskRecord]:
        """Hook: the tasks chained ahead onto ``rec``'s result, directly or further down."""
        out: list[TaskRecord] = []
        stack = [rec]
        while stack:
            for child in stack.pop().pt.children:
                crec = self._records[child]
                if sent_ahead(crec):
                    out.append(crec)
                    stack.append(crec)
        return out


def sent_ahead(rec: TaskRecord) -> bool:
    """True when ``rec`` is queued or sent ahead of its upstreams."""
    return (rec.items is not None and not rec.mapped
            and rec.items[0].phase in (QUEUED_AHEAD, SENT_AHEAD))


def _handed_over(rec: TaskRecord) -> bool:
    """Every branch of a mapped task runs or succeeded (none waits, failed or skipped)."""
    c = rec.counts
    return (rec.n is not None and rec.in_flight + rec.done == rec.n
            and c.get("succeeded", 0) + c.get("cached", 0) == rec.done)
