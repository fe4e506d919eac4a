"""Runs started from a notebook: bind results as tasks finish, follow a run under a cell.

:func:`start` is the one way the notebook starts a run, for ``%nbflow run``
and for the widget's node actions alike: ``flow.run(..., background=True)``
with a :class:`Binder` observing it. :func:`follow` is what makes a run
"blocking" in a cell: it waits in slices, shows each task's output as the
task ends, keeps a progress line (or the live widget) up to date, and ends
with the summary line or the run's failure.
"""

from __future__ import annotations

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
        Before anything runs, when the flow cannot run as declared.
    KeyboardInterrupt
        A kernel interrupt; a run it caught just after starting is cancelled.
    """
    binder = Binder(flow, namespace)
    before = flow.last_run
    try:
        run = flow.run(targets, params=params, executor=executor, force=list(force),
                       background=True, observers=[binder])
    except KeyboardInterrupt:
        started = flow.last_run
        if started is not None and started is not before:
            started.cancel()  # the interrupt came once the run had started: do not leave it
        raise
    binder.run = run
    return run


def follow(run: Run, flow: NotebookFlow,
           make_widget: Callable[[], Any] | None = None) -> None:
    """Block until ``run`` ends, as a blocking ``%nbflow run`` does.

    Shows the live widget ``make_widget()`` builds (else, after
    :data:`PROGRESS_AFTER` seconds, a progress line) and each task's output
    under the current cell as tasks end; then prints the summary line. A
    kernel interrupt cancels the run and is re-raised, also one that comes
    while the widget is being built (its first import can take a second);
    a failed task raises the run's :class:`~nbflow.FlowFailed`, rendered
    with the task cells' lines.
    """
    from IPython.display import DisplayHandle

    __tracebackhide__ = True
    shower = OutputShower(run)
    handle: Any = None  # an IPython DisplayHandle, once shown
    widget: Any = None
    shown_text = ""
    started = time.monotonic()
    try:
        widget = make_widget() if make_widget is not None else None
        if widget is not None:
            handle = DisplayHandle()  # type: ignore[no-untyped-call]
            handle.display(widget)
        while True:
            try:
                run.wait(timeout=0.2)
                finished = True
            except TimeoutError:
                finished = False
            shower.poll()
            if widget is not None:
                if finished:  # store the final DAG (its static SVG) as the cell's output
                    handle.update(widget)
                    break
                continue
            text = progress_text(run)
            if finished:
                if handle is not None and text != shown_text:
                    handle.update({"text/plain": text}, raw=True)
                break
            if time.monotonic() - started >= PROGRESS_AFTER and text != shown_text:
                if handle is None:
                    handle = DisplayHandle()  # type: ignore[no-untyped-call]
                    handle.display({"text/plain": text}, raw=True)
                else:
                    handle.update({"text/plain": text}, raw=True)
                shown_text = text
    except KeyboardInterrupt:
        run.cancel()
        try:
            run.wait(timeout=10)
        except (TimeoutError, KeyboardInterrupt):
            pass
        shower.poll()
        if widget is not None and handle is not None:
            handle.update(widget)
        elif handle is not None:
            handle.update({"text/plain": progress_text(run)}, raw=True)
        progress = progress_text(run).removeprefix("nbflow: ")
        print(f"nbflow: run cancelled by a kernel interrupt; {progress}")
        raise interrupted() from None
    print(summary_line(run))
    if run.failures:
        raise failure(run, flow.tasks)
