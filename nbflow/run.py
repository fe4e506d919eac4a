"""Run: the user's handle on one execution of a flow."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from .cache import ResultStore
from .jobdir import JobDir, kept
from .errors import FlowFailed, LoopThreadError, ResultUnavailableError, UnknownTaskError
from .events import EventBus, Observer, RunStatus
from .executors.base import Executor
from .loop import get_loop_thread
from .plan import Plan
from .scheduler import Scheduler
from .states import OK
from .transitions import Transitions
from .values import Failed
from .views import StoryEntry, TaskView

if TYPE_CHECKING:
    from .flow import Flow
    from .widget.model import DagWidget


class Run:
    """One execution of a flow: its status, per-task states, results and failures.

    Created by ``flow.run(...)``; do not build it yourself.
    """

    def __init__(
        self,
        plan: Plan,
        executor: Executor,
        store: ResultStore,
        observers: Iterable[Observer] = (),
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.flow = plan.flow
        self.plan = plan
        #: the per-task overrides it runs with (``flow.run(config=...)``), as given
        self.config: dict[str, Any] = {}
        self.executor = executor
        #: the result store it reads and writes (the flow's cache)
        self.store = store
        self.bus = EventBus(observers, interval=float(config.get("event_interval")))
        self._sm = Transitions(plan, self.id, self.bus)
        self._scheduler = Scheduler(self._sm, executor, store)
        #: the run's job directory, shared by its tasks (``nf.job_dir()``), made on first use
        self.job = JobDir(plan.flow, self.id)
        self._scheduler.board.job = self.job
        self._sm.job = self.job  # its path goes into the final run event
        self._loop_thread = get_loop_thread()
        self._future: concurrent.futures.Future[str] | None = None
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._waiters_lock = threading.Lock()
        self.started: float | None = None
        self.ended: float | None = None
        self._job_made: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Schedule the run on the scheduler loop (returns at once)."""
        if self._future is not None:
            return
        self.started = time.time()
        self.bus.bind(self._loop_thread.loop)
        self._future = self._loop_thread.submit(self._scheduler.execute())
        self._future.add_done_callback(self._on_done)

    def _on_done(self, future: concurrent.futures.Future[str]) -> None:
        self.ended = time.time()
        if not future.cancelled() and future.exception() is not None:
            self._error = future.exception()
        self.bus.close()
        if not self.bus.dispatching:
            self._finish()
            return
        # Deliver the last events before anyone waiting learns that the run ended; this
        # callback runs on the scheduler thread, so hand the wait to a helper thread.
        threading.Thread(target=self._finish, name="nbflow-run-end", daemon=True).start()

    def _finish(self) -> None:
        self.bus.wait_closed(timeout=30)
        self._job_made = self.job.made  # for the summary, also once it is removed
        with contextlib.suppress(OSError):
            self.job.finish(self.status)
        with self._waiters_lock:
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody awaits any more
                pass

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends; a keyboard interrupt cancels it and is re-raised.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first (the run goes on),
        and :class:`~nbflow.errors.LoopThreadError` on the scheduler's thread.
        """
        if self._loop_thread.in_loop_thread():
            msg = "run.wait() was called on the scheduler's thread; use await run.wait_async()"
            raise LoopThreadError(msg)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._done.wait(0.1 if deadline is None else
                                      max(0.0, min(0.1, deadline - time.monotonic()))):
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"run {self.id} of flow {self.flow!r} is still {self.status} "
                                       f"after {timeout}s")
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(10)
            raise
        self._raise_internal()
        return self

    async def wait_async(self) -> Run:
        """Await the end of the run from any event loop (cancelling the await cancels the run)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            if self._done.is_set():
                future.set_result(None)
            else:
                self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            self.cancel()
            raise
        self._raise_internal()
        return self

    def _raise_internal(self) -> None:
        if self._error is not None:
            raise self._error

    def cancel(self, task: str | None = None) -> None:
        """Stop the run: nothing new starts; running tasks are cancelled or abandoned.

        With ``task``, cancel only that task (every branch of a mapped one): what
        depends on it is skipped, everything else goes on, and the run ends
        ``cancelled`` (``failed`` if a task failed). An unknown ``task`` raises
        :class:`~nbflow.UnknownTaskError`, with the closest names.
        """
        index = None
        if task is not None:
            pt = self.plan.by_name.get(task) if isinstance(task, str) else None
            if pt is None:
                raise UnknownTaskError(self.flow, str(task), "run.cancel()", self.plan.by_name)
            index = pt.index
        if self._future is None or self._done.is_set():
            return
        if index is None:
            self._scheduler.board.cancel_all()  # heard at once, even while inline blocks the loop
            self._loop_thread.call(self._scheduler.cancel)
        else:
            self._loop_thread.call(self._scheduler.cancel_task, index)

    def observe(self, observer: Observer) -> None:
        """Receive batches of this run's events from now on."""
        self.bus.add(observer)

    def widget(self, flow: Flow | None = None) -> DagWidget:
        """The live DAG widget of this run (needs ``nbflow[widget]``).

        Given the run's ``flow``, the widget draws all its tasks and its node actions
        (re-run, run what it needs) can start new runs; otherwise it draws this run's tasks.
        """
        from .widget import DagWidget

        return DagWidget(flow, self)

    def raise_for_failure(self) -> None:
        """Raise :class:`~nbflow.FlowFailed` if any task failed."""
        failures = self.failures
        if failures:
            raise FlowFailed(self.flow, failures, self)

    # -- state --------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def status(self) -> RunStatus:
        """``pending``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        status = self._sm.status
        if status in ("pending", "running") or self._done.is_set():
            return status
        return "running"  # final inside the scheduler, but the last events are in flight

    @property
    def states(self) -> dict[str, str]:
        """Each task's state, by name."""
        return {v.name: v.state for v in self._sm.views()}

    @property
    def failures(self) -> list[Failed]:
        """Every failed task (each failed branch of a mapped task), in run order."""
        return self._sm.failures()

    @property
    def results(self) -> Results:
        """Results by task name (a mapped task gives the list of its branch results)."""
        return Results(self)

    def _index(self, name: str) -> int:
        try:
            return self.plan.by_name[name].index
        except KeyError:
            raise ResultUnavailableError(name, "unknown", self.plan.by_name) from None

    def task(self, name: str) -> TaskView:
        """Task ``name`` as it stands: a frozen :class:`~nbflow.TaskView`, safe from any thread."""
        index = self._index(name)
        view = self._sm.view(index)
        if view.final and index in self._still_running():
            return dataclasses.replace(view, still_running=True)
        return view

    def _views(self) -> list[TaskView]:
        """The machine's views, marked ``still_running`` where a stopped task's body still
        runs in a thread (the executors know that, not the machine)."""
        views = self._sm.views()
        still = self._still_running()
        if still:
            views = [dataclasses.replace(v, still_running=True) if i in still and v.final
                     else v for i, v in enumerate(views)]
        return views

    def _still_running(self) -> set[int]:
        """Tasks (by index) with a stopped attempt whose body has not returned yet."""
        return {item_id[0][0] for item_id in self._scheduler.board.still_running()}  # type: ignore[index]

    def lineage(self, name: str) -> dict[str, Any]:
        """Everything that produced task ``name``'s result: its upstream tasks, their cache
        key parts (code) and the parameters, as JSON-ready data (see ``nbflow.history``)."""
        from .history.lineage import lineage

        return lineage(self, name)

    def story(self, name: str) -> list[StoryEntry]:
        """Task ``name``'s transitions so far, with times and causes (for debugging).

        A mapped task's story keeps its first branch transitions and all of its own.
        """
        return self._sm.story(self._index(name))  # a copy of a list of tuples: safe here

    @property
    def tasks(self) -> dict[str, TaskView]:
        """Every task of the run as it stands, by name, in run order."""
        return {v.name: v for v in self._views()}

    def record(self, name: str) -> TaskView:
        """The same as :meth:`task` (the older name)."""
        return self.task(name)

    def summary(self) -> Summary:
        """A table: task, state, branches, attempts, duration; then the command tasks
        (command line, host, image) and where the job directory is."""
        rows = []
        for view in self._views():
            branches = (view.done, view.branches) if view.mapped else None
            rows.append(SummaryRow(view.name, view.state_text, branches, view.attempts,
                                   view.duration, view.command, view.host, view.image))
        made = self.job.made or self._job_made
        return Summary(self.flow, self.id, self.status, rows, self.dashboard_link,
                       None if made is None else str(made), self.job.keep)

    def stream(self, task: str | Sequence[str], *, ordered: bool = False) -> Iterator[Any]:
        """The results of ``task`` as they come: each branch of a mapped or streaming task
        as soon as it succeeded (a plain task: its result when it ends). With several
        tasks, ``(task, value)`` pairs. ``ordered=True`` keeps the branches' order.
        Leaving the loop early cancels the run (see ``result_stream.py``)."""
        from .result_stream import stream_results

        names = [task] if isinstance(task, str) else list(task)
        for name in names:  # read: an unbounded stream's results may go once they are
            self._sm.watch(self._index(name))
        return stream_results(self, names, ordered, pairs=len(names) > 1)

    def _delivered(self, index: int, n: int) -> None:
        self._sm.delivered(index, n)

    def _final_branch(self, index: int, branch: int | None) -> tuple[str, Any] | None:
        return self._sm.final_branch(index, branch)

    def _final_branches(self, index: int, since: int = 0) -> Iterator[tuple[int | None, str, Any]]:
        return self._sm.final_branches(index, since)

    def _has_branches(self, index: int) -> bool:
        return self.plan.tasks[index].branches

    def _readable(self, index: int, value: Any) -> Any:
        """A result as held by the run (maybe a cache marker or a remote reference), read."""
        value = self._scheduler.cached.value(value)
        executor = self._scheduler.executor_of(index)
        if executor.remote:
            return self._loop_thread.run_sync(executor.fetch(value))
        return value

    def _result(self, name: str) -> Any:
        index = self._index(name)
        state = self._sm.view(index).state
        if state not in OK:
            raise ResultUnavailableError(name, state)
        return self._readable(index, self._sm.result(index))  # read from the cache now

    @property
    def dashboard_link(self) -> str | None:
        """The dask dashboard of the run's cluster, when it runs on one with a dashboard."""
        for ex in self._scheduler.executors:
            link = getattr(ex, "dashboard_link", None)
            if link:
                return str(link)
        return None

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for view in self._views():
            counts[view.state_text] = counts.get(view.state_text, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        # the machine's status: final as soon as every task is (the last events may still
        # be on their way to observers, which is what `status` waits for)
        status = self._sm.status
        return f"Run({self.flow!r}, {status}, {len(self.plan.tasks)} tasks: {parts})"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Results(Mapping[str, Any]):
    """A read-only mapping of the results of a run's succeeded and cached tasks."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def __getitem__(self, name: str) -> Any:
        return self._run._result(name)

    def __iter__(self) -> Iterator[str]:
        return (name for name, view in self._run.tasks.items() if view.state in OK)

    def __len__(self) -> int:
        return sum(1 for view in self._run.tasks.values() if view.state in OK)

    def __repr__(self) -> str:
        return f"Results({list(self)})"


@dataclass(frozen=True)
class SummaryRow:
    task: str
    state: str
    #: (finished, total) branches of a mapped task
    branches: tuple[int, int | None] | None
    attempts: int
    duration: float | None
    #: a command task's command line (as declared until it ran); None for a Python task
    command: str | None = None
    #: the host a command task ran on (once it ended)
    host: str | None = None
    #: the container image the task ran in, if any
    image: str | None = None


@dataclass(frozen=True)
class Summary:
    """The per-task outcome of a run; ``str()`` gives a text table."""

    flow: str
    run_id: str
    status: str
    rows: list[SummaryRow]
    #: the dask dashboard's URL, for a run on a cluster that has one
    dashboard: str | None = None
    #: the run's job directory, when a task made one
    job_dir: str | None = None
    #: the ``keep_job_dir`` setting of the run: "always", "failure" or "never"
    keep_job_dir: str = "always"

    def __str__(self) -> str:
        header = ("task", "state", "branches", "attempts", "duration")
        lines = [header]
        for r in self.rows:
            branches = "" if r.branches is None else f"{r.branches[0]}/{r.branches[1] or 0}"
            duration = "" if r.duration is None else f"{r.duration:.3f}s"
            lines.append((r.task, r.state, branches, str(r.attempts), duration))
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = [f"Run {self.run_id} of flow {self.flow!r}: {self.status}"]
        for row in lines:
            text.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        text.extend(commands_text(self.rows))
        if self.job_dir:
            text.append(f"job directory: {self.job_dir} ({self._job_dir_fate()})")
        if self.dashboard:
            text.append(f"dask dashboard: {self.dashboard}")
        return "\n".join(text)

    def _job_dir_fate(self) -> str:
        setting = f"keep_job_dir={self.keep_job_dir!r}"
        if self.status in ("pending", "running"):
            return setting
        return f"{'kept' if kept(self.keep_job_dir, self.status) else 'removed'}: {setting}"

    def __repr__(self) -> str:
        return str(self)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts (for JSON, pandas)."""
        return [r.__dict__.copy() for r in self.rows]


#: characters of a command line shown in the summary's text (``to_dicts`` has it whole)
COMMAND_CHARS = 80


def commands_text(rows: list[SummaryRow]) -> list[str]:
    """The summary's lines about command tasks and tasks with an image: the command
    (cut to one line of :data:`COMMAND_CHARS`), the host it ran on and the image."""
    shown = [r for r in rows if r.command is not None or r.image is not None]
    if not shown:
        return []
    width = max(len(r.task) for r in shown)
    lines = ["commands:" if all(r.command is not None for r in shown) else "commands and images:"]
    for r in shown:
        what = "(python)" if r.command is None else "$ " + short_command(r.command)
        facts = [f"on {r.host}"] if r.host else []
        if r.image:
            facts.append(f"image {r.image}")
        lines.append(f"  {r.task.ljust(width)}  {what}" + (f"  [{', '.join(facts)}]" if facts else ""))
    return lines


def short_command(command: str, limit: int = COMMAND_CHARS) -> str:
    """``command`` on one line of at most ``limit`` characters (``…`` where it was cut)."""
    lines = command.strip().splitlines() or [""]
    text = lines[0].rstrip() + (" …" if len(lines) > 1 else "")
    return text if len(text) <= limit else text[:limit - 1] + "…"
