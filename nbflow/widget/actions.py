"""What the widget's buttons do: the runner, which tasks each action runs, and the
:class:`WidgetActions` part of :class:`~nbflow.widget.DagWidget` that carries them out.

The widget's node and toolbar actions start runs only through a :data:`Runner`,
so they plan, cache and log like any other run. The functions here decide the
targets and the forced tasks of each action; the widget follows the run started.
Collapsing groups and chains changes only the drawing (:mod:`.collapse`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..graph import descendants
from .layout import Fold, Structure
from .nodes import available_actions, shown_status, status_line as line_of_run

if TYPE_CHECKING:
    from ..events import Observer
    from ..flow import Flow
    from ..run import Run
    from ..views import TaskView
    from .collapse import Folding
    from .nodes import NodeTable

__all__ = ("Runner", "WidgetActions", "default_runner", "downstream", "rerun_failed",
           "rerun_task")

logger = logging.getLogger(__name__)

#: ``runner(targets, force)`` starts a background run of the flow and returns it
Runner = Callable[[Sequence[str] | None, Sequence[str]], "Run"]


def default_runner(flow: Flow, observers: Iterable[Observer] = ()) -> Runner:
    """The runner of a widget given no other: ``flow.run(targets, force=force, background=True)``.

    The widget's actions then start runs the way any other code does (planning,
    executor setting, event log), and the forced tasks replace their cached results.
    ``observers`` observe each run from its start (the widget passes itself).
    """
    watching = list(observers)

    def run(targets: Sequence[str] | None, force: Sequence[str]) -> Run:
        return flow.run(targets, force=force, background=True, observers=watching)

    return run


def downstream(structure: Structure | None, name: str) -> set[str]:
    """The tasks drawn below ``name`` (not ``name`` itself)."""
    if structure is None or name not in structure.names:
        return set()
    return descendants(structure.parents(), [name]) - {name}


def rerun_task(structure: Structure | None, name: str) -> list[str]:
    """"Re-run": the task and what depends on it, all forced (targets = force)."""
    return [name, *sorted(downstream(structure, name))]


def rerun_failed(run: Run, views: Mapping[str, TaskView],
                 structure: Structure | None) -> tuple[list[str], list[str]]:
    """"Re-run failed": targets and forced tasks.

    The run's tasks again; its failed tasks and what depends on them forced, the
    rest from the cache. Descendants the run did not plan stay out.
    """
    failed = [name for name, view in views.items() if view.state == "failed"]
    if not failed:
        raise ValueError(f"run {run.id} has no failed task to re-run")
    again = set(failed)
    for name in failed:
        again |= downstream(structure, name)
    return list(views), [name for name in views if name in again]


class WidgetActions:
    """The actions of :class:`~nbflow.widget.DagWidget` (a part of it, as a mixin).

    Front-end messages arrive in :meth:`_on_message`; :meth:`act` carries them out.
    Runs start only through the widget's runner, and the widget follows them.
    """

    if TYPE_CHECKING:  # what the widget provides
        _lock: threading.RLock
        _run: Run | None
        _flow: Flow | None
        _runner: Runner | None
        _runner_observes: bool
        _structure: Structure | None
        _snapshot_of: Run | None
        _table: NodeTable
        _folding: Folding
        run_status: str
        status_line: str
        available: list[str]

        def send(self, content: Any, buffers: Any = None) -> None: ...
        def hold_sync(self) -> Any: ...
        def _attach(self, run: Run, observing: bool) -> None: ...
        def _send_snapshot(self) -> None: ...
        def _draw(self, shown: Structure) -> None: ...

    def _on_message(self, widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("action") == "ping":  # the view asks whether a kernel is behind it
            self.send({"pong": content.get("id")})
            return
        try:
            self.act(str(content.get("action")), content.get("task"))
        except Exception as exc:
            logger.warning("nbflow widget action %r failed: %s", content, exc)
            self.send({"error": f"{content.get('action')}: {exc}"})

    def act(self, action: str, task: str | None = None) -> Run | None:
        """Carry out a front-end action; returns the run it started, if any.

        ``rerun`` (the task and what depends on it, recomputed), ``needs`` (what the task
        needs, from the cache where possible), ``cancel`` (the run the widget follows),
        ``cancel_task`` (that task of the run; the rest goes on), ``rerun_failed`` (the
        followed run's tasks again, its failed tasks and what depends on them forced,
        the rest from the cache). Runs start through the widget's runner, and the
        widget follows them. :attr:`available` says which of them apply now.
        ``collapse``/``expand`` (unit ``task``), ``collapse_all`` (units of kind ``task``,
        "group" or "chain", None: all) and ``expand_all`` change only the drawing.
        """
        if action in ("collapse", "expand") and task is not None:
            self._fold([task], action == "collapse")
            return None
        if action == "collapse_all":
            self._fold([i for i, u in self.collapsible.items() if task in (None, u.kind)], True)
            return None
        if action == "expand_all":
            self._fold(list(self.collapsible), False)
            return None
        run = self._run
        if action == "cancel":
            if run is not None:
                run.cancel()
            return None
        if action == "cancel_task" and task is not None:
            if run is not None:
                run.cancel(task)
            return None
        if action == "rerun" and task is not None:
            targets = rerun_task(self._structure, task)
            return self._start(targets, targets)
        if action == "needs" and task is not None:
            return self._start([task], ())
        if action == "rerun_failed":
            return self._rerun_failed()
        raise ValueError(f"unknown widget action {action!r} (task {task!r})")

    @property
    def collapsible(self) -> dict[str, Fold]:
        """The groups and long chains, by id (``group/<name>``, ``chain/<first task>``)."""
        return dict(self._folding.units)

    @property
    def collapsed(self) -> list[str]:
        """The ids of the units drawn collapsed."""
        with self._lock:
            return sorted(self._folding.collapsed)

    def collapse(self, *units: str) -> None:
        """Draw each of ``units`` as one node (none given: every group and chain).

        A unit is named by its id (``group/cleaning``, ``chain/load``), a group's
        name, or any of its tasks. The node shows its members' aggregate state and
        how many of them ended. An unknown name raises ``ValueError`` listing the units.
        """
        self._fold(units or list(self.collapsible), True)

    def expand(self, *units: str) -> None:
        """Draw the tasks of each of ``units`` again (none given: every unit)."""
        self._fold(units or list(self.collapsible), False)

    def _fold(self, units: Sequence[str], on: bool) -> None:
        with self._lock:
            shown = self._folding.collapse(units, on)
            self._send_snapshot()  # the collapsed nodes' infos, before their layout
            self._draw(shown)

    def _rerun_failed(self) -> Run:
        run = self._followed()
        if run is None:
            raise ValueError("there is no run whose failed tasks could be re-run")
        targets, force = rerun_failed(run, run.tasks, self._structure)
        return self._start(targets, force)

    def _start(self, targets: Sequence[str] | None, force: Sequence[str]) -> Run:
        if self._runner is None:
            raise ValueError("this widget shows a run without its flow; it cannot start runs")
        new = self._runner(targets, force)
        self._attach(new, observing=self._runner_observes)
        with self._lock:
            if self._run is new and self._snapshot_of is not new:
                # until its snapshot: no button that starts a second run meanwhile
                self.available = available_actions("pending", 0, True)
        return new

    def _followed(self) -> Run | None:
        """The run whose states the nodes show: the attached one, else the flow's last
        run when the nodes show it (a flow widget shown after that run ended)."""
        run = self._run
        if run is not None and run.id == self._table.run_id:
            return run
        last = self._flow.last_run if self._flow is not None else None
        if last is not None and last.id == self._table.run_id:
            return last
        return run

    def _update_actions(self) -> None:
        """The status line and the available actions, from the followed run (lock held).

        The status is the run's final one once known (its final event), and the failed
        count what the nodes show, so the two never disagree.
        """
        run = self._followed()
        if run is None:
            status = ""
        elif run is self._run and self.run_status:
            status = self.run_status
        else:
            status = shown_status(run)
        failed = len(self._table.failed())
        shown = self._table.counts().get("failed", 0)
        with self.hold_sync():
            self.status_line = line_of_run(status, failed, shown)
            self.available = available_actions(status, failed, self._runner is not None)
