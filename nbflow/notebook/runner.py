"""Runs started from a notebook: bind results as tasks finish, follow a run under a cell.

:func:`start` is the one way the notebook starts a run, for ``%nbflow run``
and for the widget's node actions alike: ``flow.run(..., background=True)``
with a :class:`Binder` observing it. :func:`follow` is what makes a run
"blocking" in a cell: it waits in slices, shows each task's output as the
task ends, keeps a progress line (or the live widget) up to date, and ends
with the summary line or the run's failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import NbflowError
from ..events import TaskEvent
from .display import OutputShower, failure, interrupted, progress_text, summary_line

if TYPE_CHECKING:
    from ..executors.base import Executor
    from ..run import Run
    from .state import NotebookFlow

#: seconds a blocking run may take before a progress line appears
PROGRESS_AFTER = 0.5


class Binder:
    """Observer: binds each finished task's result into the notebook namespace, and
    records what it ran with (for ``%nbflow why`` and ``%nbflow status``).

    Runs on the event dispatcher thread. It reads the views the task events
    carry; a result is fetched from the run only for a task that has one.
    """

    def __init__(self, flow: NotebookFlow, namespace: dict[str, Any]) -> None:
        self.flow = flow
        self.namespace = namespace
        #: the run observed, once ``flow.run`` returned it
        self.run: Run | None = None

    def _run_for(self, run_id: str) -> Run | None:
        if self.run is not None:
            return self.run
        last = self.flow.last_run  # set before the run starts, so its first events find it
        return last if last is not None and last.id == run_id else None

    def __call__(self, events: Sequence[Any]) -> None:
        for event in events:
            if not isinstance(event, TaskEvent) or event.branch is not None:
                continue
            if event.view is None or not event.view.final:
                continue  # only a task's own final event matters
            run = self._run_for(event.run_id)
            if run is None:
                continue
            view = event.view
            if view.ok:
                try:
                    self.namespace[view.name] = run.results[view.name]
                except NbflowError:  # e.g. a dask result that could not be fetched
                    continue
            if view.ok or view.state == "failed":
                self.flow.history.record(run, view.name)


def start(
    flow: NotebookFlow,
    namespace: dict[str, Any],
    targets: Sequence[str] | None = None,
    *,
    force: Iterable[str] = (),
    params: Mapping[str, Any] | None = None,
    executor: str | Executor | None = None,
) -> Run:
    """Start a background run of ``flow`` whose results are bound into ``namespace``.

    Parameters
    ----------
    flow
        The notebook flow to run.
    namespace
        The notebook namespace: each finished task's result is bound there under its name.
    targets
        Tasks to run, with what they need (None: every task).
    force
        Tasks recomputed whatever the cache holds; their results replace the cached ones.
    params, executor
        As for :meth:`nbflow.Flow.run`.

    Raises
    ------
    nbflow.errors.ValidationError
        Before anything runs, when the flow cannot run as declared (or with the
        per-task overrides ``nbflow run`` gave the kernel in ``NBFLOW_TASK_CONFIG``).
    nbflow.errors.InvalidOptionError
        Before anything runs, for an override of an option or argument that cannot be set.
    KeyboardInterrupt
        A kernel interrupt; a run it caught just after starting is cancelled.
    """
    from ..overrides import from_environ

    binder = Binder(flow, namespace)
    before = flow.last_run
    # ``nbflow run -c/-p TASK.ARG`` of this kernel's notebook: a task the flow does not have
    # yet is left for a later %nbflow run, after the cell that declares it
    config = {k: v for k, v in from_environ().items() if k.partition(".")[0] in flow}
    try:
        run = flow.run(targets, params=params, executor=executor, force=list(force),
                       background=True, observers=[binder], config=config)
    except KeyboardInterrupt:
        started = flow.last_run
        if started is not None and started is not before:
            started.cancel()  # the interrupt came once the run had started: do not leave it
        raise
    binder.run = run
    return run


class Follower:
    """What a blocking run shows under its cell, step by step; :func:`follow` and
    :func:`follow_async` only differ in how they wait between the steps.

    First the live widget (else, after :data:`PROGRESS_AFTER` seconds, a progress
    line); each task's output as the task ends; at the end the final picture, the
    summary line, and the run's :class:`~nbflow.FlowFailed` if a task failed.
    """

    def __init__(self, run: Run, flow: NotebookFlow,
                 make_widget: Callable[[], Any] | None) -> None:
        self.run = run
        self.flow = flow
        self.make_widget = make_widget
        self.shower = OutputShower(run)
        self.widget: Any = None
        self.handle: Any = None  # an IPython DisplayHandle, once shown
        self.shown_text = ""
        self.started = time.monotonic()

    def build_widget(self) -> Any:
        """The live widget (None without one); its first import can take a second."""
        self.widget = self.make_widget() if self.make_widget is not None else None
        return self.widget

    def show_widget(self) -> None:
        """Display the widget under the cell (it redraws that output when the run ends)."""
        self.handle = self.widget.show()

    def step(self, finished: bool) -> None:
        """Show what changed since the last step: task outputs, the progress line."""
        from IPython.display import DisplayHandle

        self.shower.poll()
        if self.widget is not None:
            return  # it updates itself; its final picture comes with end()
        text = progress_text(self.run)
        if text == self.shown_text:
            return
        if finished:
            if self.handle is not None:
                self.handle.update({"text/plain": text}, raw=True)
                self.shown_text = text
        elif time.monotonic() - self.started >= PROGRESS_AFTER:
            if self.handle is None:
                self.handle = DisplayHandle()  # type: ignore[no-untyped-call]
                self.handle.display({"text/plain": text}, raw=True)
            else:
                self.handle.update({"text/plain": text}, raw=True)
            self.shown_text = text

    def show_final(self) -> None:
        """The last task outputs, and the widget's final picture in the cell's output
        before the cell ends (what a saved notebook keeps)."""
        self.shower.poll()
        if self.widget is not None:
            self.widget.redraw()

    def end(self) -> None:
        """The summary line, then the run's failure if a task failed."""
        __tracebackhide__ = True
        print(summary_line(self.run))
        if self.run.failures:
            raise failure(self.run, self.flow.tasks)

    def cancelled(self) -> KeyboardInterrupt:
        """After a kernel interrupt cancelled the run: one line of how it stands, and
        the one-line interrupt to raise."""
        progress = progress_text(self.run).removeprefix("nbflow: ")
        print(f"nbflow: run cancelled by a kernel interrupt; {progress}")
        return interrupted()


def follow(run: Run, flow: NotebookFlow,
           make_widget: Callable[[], Any] | None = None) -> None:
    """Block until ``run`` ends, as a blocking ``%nbflow run`` does (see :class:`Follower`).

    A kernel interrupt cancels the run and is re-raised, also one that comes while
    the widget is being built; a failed task raises the run's
    :class:`~nbflow.FlowFailed`, rendered with the task cells' lines.
    """
    __tracebackhide__ = True
    follower = Follower(run, flow, make_widget)
    try:
        if follower.build_widget() is not None:
            follower.show_widget()
        finished = False
        while not finished:
            try:
                run.wait(timeout=0.2)
                finished = True
            except TimeoutError:
                pass
            follower.step(finished)
        follower.show_final()
    except KeyboardInterrupt:
        run.cancel()
        try:
            run.wait(timeout=10)
        except (TimeoutError, KeyboardInterrupt):
            pass
        follower.step(True)
        follower.show_final()
        raise follower.cancelled() from None
    follower.end()


async def follow_async(run: Run, flow: NotebookFlow,
                       make_widget: Callable[[], Any] | None = None) -> None:
    """:func:`follow` for an awaited ``%nbflow run`` (see :mod:`.awaiting`).

    The cell waits on the kernel's event loop, so the kernel goes on answering the
    front end while the run goes on: the widget's buttons work, and a reloaded page
    gets its widgets. Work that may wait (building the widget, drawing its
    pictures) runs on a helper thread. An interrupt (which ipykernel turns into the
    cancellation of an awaiting cell) cancels the run, as in :func:`follow`.
    """
    __tracebackhide__ = True
    follower = Follower(run, flow, make_widget)
    ended = asyncio.ensure_future(run.wait_async())
    try:
        # on threads that carry the cell's context (its outputs go under the cell)
        if await asyncio.to_thread(follower.build_widget) is not None:
            await asyncio.to_thread(follower.show_widget)
        finished = False
        while not finished:
            done, _ = await asyncio.wait([ended], timeout=0.2)
            finished = bool(done)
            follower.step(finished)
        await asyncio.to_thread(follower.show_final)
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.cancel()
        await asyncio.wait([ended], timeout=10)
        follower.step(True)
        await asyncio.to_thread(follower.show_final)
        raise follower.cancelled() from None
    finally:
        if ended.done() and not ended.cancelled():
            ended.exception()  # retrieved: the run's errors are shown by end()
    follower.end()
