"""DagWidget: the live DAG of a flow or a run, as an anywidget.

What travels to the front end (``widget.js``):

- ``svg``: the Graphviz layout, sent once per structure change. Layouts run in
  another process (:mod:`nbflow.widget.service`); meanwhile the front end keeps
  painting states on the previous layout, or shows a "laying out" note.
- ``snapshot_json``: every node's info (:mod:`nbflow.widget.nodes`), sent when a
  run is attached, at most every ``snapshot_every`` seconds, and at the end.
- ``delta``: the nodes that changed since the last delta, at most one delta every
  ``interval`` seconds (about 10 per second; :mod:`nbflow.widget.throttle`).
  Details that the panel shows (error traceback, result preview, captured output)
  travel with the delta of the state change that produced them: the kernel does not
  handle the front end's messages while a synchronous cell runs.
- ``styles``, ``legend`` and ``state_rules``: the states and how to draw them, from
  :mod:`nbflow.states` and :mod:`nbflow.widget.layout` (the front end names none).

Collapsed groups and chains (:meth:`DagWidget.collapse`, the front end's buttons) are
drawn from :mod:`nbflow.widget.collapse`; their nodes' infos travel with the tasks'. The
kernel answers a view's ``ping``: a view drawn from saved state gets no answer.

The widget is an observer of run events: it runs on the event dispatcher thread,
never blocks the scheduler's loop or the kernel's, and reads only the task views
the events carry (and ``run.task(name)``, the latest view, for mapped tasks).
It starts runs only through the ``runner`` it was given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from ..events import Event, RunEvent, TaskEvent
from ..states import FINAL
from .actions import Runner, WidgetActions, default_runner
from .badges import mark_svg
from .collapse import CHAIN_MIN, Folding
from .layout import STATES, STYLES, Structure, state_rules, structure_of
from .nodes import PREVIEW_CHARS, NodeTable, moving, preview, \
    result_preview, shown_status
from .helper import helper
from .service import LayoutService, get_service
from .static import WidgetPictures
from .throttle import Throttle

if TYPE_CHECKING:
    from ..flow import Flow
    from ..run import Run
    from ..views import TaskView

__all__ = ("PREVIEW_CHARS", "DagWidget", "Runner", "default_runner", "preview")

logger = logging.getLogger(__name__)

_HERE = Path(__file__).parent

class DagWidget(WidgetPictures, WidgetActions, anywidget.AnyWidget):
    """The live DAG of a flow (``flow.widget()``) or of one run (``run.widget()``).

    Parameters
    ----------
    flow
        The flow whose tasks are drawn (None: only the run's plan is drawn).
    run
        A run to follow; its states colour the nodes while it runs.
    runner
        Starts the background runs of the node and toolbar actions (re-run,
        re-run failed, run what it needs); ``%nbflow`` passes one that binds
        results in the notebook. Default: :func:`default_runner` of ``flow``;
        a widget with neither has no run actions.
    service
        Where layouts are computed (default: the process-wide layout process).
    """

    _esm = _HERE / "widget.js"
    _css = _HERE / "widget.css"

    flow_name = traitlets.Unicode("").tag(sync=True)
    #: the laid-out SVG ("" until the first layout arrives)
    svg = traitlets.Unicode("").tag(sync=True)
    #: "pending" (a layout is being computed), "ready", or an error message
    layout_status = traitlets.Unicode("pending").tag(sync=True)
    #: the structure drawn by ``svg``: names, edges (index pairs), mapped indices
    graph = traitlets.Dict().tag(sync=True)
    #: JSON of {"seq", "time", "nodes": {name: info}}: every node (see NodeTable.to_json)
    snapshot_json = traitlets.Unicode("{}").tag(sync=True)
    #: {"seq", "time", "nodes": {name: info}}: the nodes changed since the last delta
    delta = traitlets.Dict().tag(sync=True)
    run_status = traitlets.Unicode("").tag(sync=True)
    #: the run part of the status line (see nodes.status_line): never "succeeded"
    #: beside a failed node
    status_line = traitlets.Unicode("").tag(sync=True)
    #: the actions whose buttons show now (see nodes.available_actions)
    available = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: the dask dashboard of the followed run's cluster ("" when there is none)
    dashboard = traitlets.Unicode("").tag(sync=True)
    #: whether node actions (re-run, run what it needs) can start runs
    actions = traitlets.Bool(False).tag(sync=True)
    #: state -> fill, stroke, width and dash of its nodes
    styles = traitlets.Dict(STYLES).tag(sync=True)
    #: the states, in legend order
    legend = traitlets.List(list(STATES)).tag(sync=True)
    #: the rest of what the front end knows about states (see layout.state_rules)
    state_rules = traitlets.Dict(state_rules()).tag(sync=True)

    #: seconds between two deltas (at most ~10 updates per second)
    interval = 0.1
    #: Branch events would cost a 10,000-branch map ~13% (benchmarks/widget.py, a
    #: no-op observer that takes them); the widget gets task and run events only, and
    #: while a mapped task is under way each delta re-reads it (``run.task(name)``).
    wants_branch_events = False
    #: seconds between two full snapshots during a run
    snapshot_every = 2.0
    #: the shortest chain of tasks that can be collapsed into one node
    chain_min = CHAIN_MIN

    def __init__(self, flow: Flow | None = None, run: Run | None = None, *,
                 runner: Runner | None = None, service: LayoutService | None = None,
                 **kwargs: Any) -> None:
        if flow is None and run is None:
            raise TypeError("DagWidget needs a flow or a run")
        super().__init__(**kwargs)
        self._flow = flow
        self._service = service if service is not None else get_service()
        #: True when the runner makes this widget an observer of the runs it starts
        self._runner_observes = runner is None and flow is not None
        if runner is None and flow is not None:
            runner = default_runner(flow, observers=[self])
        self._runner = runner
        self._lock = threading.RLock()
        self._throttle = Throttle(self.flush, self.interval)
        #: which groups and chains are drawn collapsed
        self._folding = Folding(self.chain_min)
        self._table = NodeTable()
        self._run: Run | None = None
        #: the run whose full snapshot was taken (after attach, on a helper thread)
        self._snapshot_of: Run | None = None
        #: the followed run's final status, once its final event arrived
        self._ended: str | None = None
        #: views from task events, not sent yet (the latest per task)
        self._pending: dict[str, TaskView] = {}
        #: tasks that changed without a view (branch events): read when sending
        self._touched: set[str] = set()
        #: mapped tasks under way: re-read with every delta (no branch events come)
        self._moving: set[str] = set()
        #: every task (what actions work on); the structure drawn folds collapsed units
        self._structure: Structure | None = None
        #: the flow's tasks ``_structure`` was built from (see _structure_from)
        self._structure_built: tuple[Any, ...] = ()
        self._shown: Structure | None = None
        self._layout_key = ""
        #: set when the current layout is shown or failed (wait_layout waits on it)
        self._layout_settled = threading.Event()
        self._seq = 0
        self._last_snapshot = float("-inf")
        #: number of deltas sent (for tests and benchmarks)
        self.deltas_sent = 0
        #: the outputs show() made: [display handle, version of its picture]
        self._displays: list[list[Any]] = []
        self._redraw_lock = threading.Lock()
        self.actions = runner is not None
        self.on_msg(self._on_message)
        if run is not None:
            self.attach(run)
        else:
            assert flow is not None
            self.refresh()

    # -- structure and layout ---------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the flow (tasks added or redeclared) and its last run's states."""
        flow = self._flow
        if flow is None:
            return
        run = flow.last_run
        if run is not None and run is not self._run and not run.done:
            self.attach(run)
            return
        with self._lock:
            shown = self._set_structure(self._structure_from(run), draw=False)
            self._table.follow(run.id if run is not None else None)
            self._table.flow_nodes(flow, run.tasks if run is not None else {},
                                   result_preview(run))
            self._send_snapshot()
            if shown is not None:
                # last: the layout thread's work (the DOT source of 2,000 tasks, in
                # Python) starts now, not while this (the kernel's) thread still works
                self._draw(shown)

    def _structure_from(self, run: Run | None) -> Structure:
        """The structure of the flow (else of ``run``'s plan), built again only when the
        flow's tasks changed (2,000 tasks: a few ms, each time a run is attached)."""
        if self._flow is None:
            assert run is not None
            return structure_of(run.plan)
        tasks = tuple(self._flow.tasks.values())
        built = self._structure_built
        if (self._structure is not None and len(built) == len(tasks)
                and all(a is b for a, b in zip(built, tasks))):
            return self._structure
        self._structure_built = tasks  # (held: their ids stay theirs)
        return structure_of(self._flow)

    def _set_structure(self, structure: Structure, draw: bool = True) -> Structure | None:
        """Take ``structure``; returns the structure to draw, drawn unless ``draw`` is
        False (None: it is the current one)."""
        if structure is self._structure:
            return None
        self._structure = structure
        shown = self._folding.set_structure(structure)
        if draw:
            self._draw(shown)
        return shown

    def _draw(self, shown: Structure) -> None:
        """Lay out ``shown`` (the structure drawn), unless it is drawn already."""
        key = shown.key
        self.flow_name = shown.flow
        self._shown = shown
        if key == self._layout_key:
            return
        self._layout_key = key
        svg = self._service.cached(key)
        if svg is not None:
            self._show_layout(svg)
            return
        self._layout_settled.clear()
        self.layout_status = "pending"
        future = self._service.layout(key, shown)  # (its DOT is built in the layout process)
        future.add_done_callback(lambda f: self._layout_done(key, f))

    def _layout_done(self, key: str, future: Any) -> None:
        with self._lock:
            if key != self._layout_key:
                return  # the structure changed again meanwhile
            error = future.exception()
            if error is not None:
                logger.warning("nbflow widget: %s", error)
                self.layout_status = str(error)
                self._layout_settled.set()
                return
            self._show_layout(future.result())

    def _show_layout(self, svg: str) -> None:
        """Show the layout of the structure drawn now (the lock is held), with the graph
        the front end reads beside it (built here: on the layout's thread, when it was
        not cached, rather than the caller's)."""
        with self.hold_sync():
            self.graph = self._folding.graph_json()
            self.svg = mark_svg(svg)  # command tasks' "$" badges
            self.layout_status = "ready"
        self._layout_settled.set()

    def wait_layout(self, timeout: float | None = 30) -> bool:
        """Block until the current layout is shown (True), failed or ``timeout`` passed."""
        self._layout_settled.wait(timeout)
        return self.layout_status == "ready"

    # -- following a run ------------------------------------------------------------------------

    def attach(self, run: Run) -> None:
        """Follow ``run``: its states colour the nodes from now on."""
        self._attach(run, observing=False)

    def _attach(self, run: Run, observing: bool) -> None:
        """Follow ``run``; ``observing``: the widget observes it from its start already.

        The snapshot (every task's view and node info, tens of ms for 2,000 tasks and
        several times that while the run competes for the GIL) is taken on the helper
        thread (:mod:`.helper`), not on the caller's (the kernel's).
        """
        with self._lock:
            self._run = run
            self._snapshot_of = None
            self._ended = None
            self._pending = {}
            self._touched = set()
            self._moving = set()
            self._table.follow(run.id)
            self._set_structure(self._structure_from(run))
            if run.done or _all_final(run):
                # It ended (its final event may not reach us): show it now. Not observing
                # it also keeps clear of a run ending while an observer is added (its
                # end waited on an event thread not yet started, and never came).
                self._take_snapshot(run)
                return
            if not observing:
                run.observe(self)  # before the snapshot: nothing between them is lost
        helper.submit(lambda: self._attach_snapshot(run))

    def _attach_snapshot(self, run: Run) -> None:
        """The helper thread's part of :meth:`_attach` (unless a final flush took it)."""
        with self._lock:
            if run is self._run and self._snapshot_of is not run:
                self._take_snapshot(run)

    def _take_snapshot(self, run: Run) -> None:
        """Every node from the run's views (the lock is held)."""
        self._snapshot_of = run
        views = run.tasks
        if self._flow is not None:
            self._table.flow_nodes(self._flow, views, result_preview(run))
        else:
            self._table.run_nodes(views, result_preview(run))
        self._moving = {name for name, view in views.items() if moving(view)}
        self.run_status = self._status(run)
        self.dashboard = run.dashboard_link or ""
        self._send_snapshot()
        if self._moving and self._ended is None:
            self._throttle.request()

    @property
    def run(self) -> Run | None:
        """The run this widget follows (None for a flow that has not run)."""
        return self._run

    def __call__(self, events: Sequence[Event]) -> None:
        """Observer: keep the views of changed tasks; send a delta when the throttle allows."""
        run = self._run
        if run is None:
            return
        run_id = run.id
        ended: str | None = None
        with self._lock:
            pending, touched = self._pending, self._touched
            for event in events:
                if event.run_id != run_id:
                    continue
                if type(event) is TaskEvent:
                    if event.view is not None:
                        pending[event.task] = event.view
                    else:  # a branch (when another observer asked for them)
                        touched.add(event.task)
                elif type(event) is RunEvent and event.status in FINAL:
                    ended = event.status
            changed = bool(pending or touched)
        if ended is not None:
            self.flush(final=True, status=ended)
        elif changed:
            self._throttle.request()

    def flush(self, final: bool = False, status: str | None = None) -> None:
        """Send the pending changes now (one delta; a snapshot too when due or final).

        Parameters
        ----------
        final
            The run ended: send a full snapshot as well.
        status
            The run's final status, from its final event (default: the run's).
        """
        with self._lock:
            self._throttle.cancel()
            run = self._run
            if run is None:
                return
            if final:
                self._ended = status = status or self._ended or self._status(run)
            if final and self._snapshot_of is not run:
                self._take_snapshot(run)  # the helper thread has not got to it yet
            views, self._pending = self._pending, {}
            for name in (self._touched | self._moving) - views.keys():
                views[name] = run.task(name)  # the latest view (branch counts move)
            self._touched = set()
            result = result_preview(run)
            changed: dict[str, dict[str, Any]] = {}
            for name, view in views.items():
                info = self._table.update(view, result)
                if info is not None:
                    changed[name] = info
                if moving(view):
                    self._moving.add(name)
                else:
                    self._moving.discard(name)
            changed.update(self._folding.touched(list(changed), self._table.nodes))
            self._seq += 1
            with self.hold_sync():
                if changed:
                    self.delta = {"seq": self._seq, "time": time.time(), "nodes": changed}
                    self.deltas_sent += 1
                self.run_status = self._ended or run.status
                self._update_actions()
                if not self.dashboard:  # known once the run's executor connected
                    self.dashboard = run.dashboard_link or ""
                due = self._throttle.clock() - self._last_snapshot >= self.snapshot_every
                if final or due:
                    self._send_snapshot()
            self._throttle.sent()
            if self._moving and self._ended is None:
                self._throttle.request()  # their branches move without events
        if final:
            self._redraw_later()  # the outputs it displayed get the final picture

    def _status(self, run: Run) -> str:
        return self._ended if self._ended is not None else shown_status(run)

    def _send_snapshot(self) -> None:
        self._update_actions()
        self._seq += 1
        self._last_snapshot = self._throttle.clock()
        self.snapshot_json = self._table.to_json(self._seq, time.time(),
                                                 self._folding.infos(self._table.nodes))

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict[str, Any]:
        """The state synced to the front end; in full (a view attached after a page
        reload, a second client), with a snapshot of every node as it is *now*.

        ``snapshot_json`` holds the last snapshot sent (at most every
        :attr:`snapshot_every` seconds, and none while nothing changes), and ``delta``
        only the last change: a view that started from them would show the nodes as
        they were then. A full state (the front end's ``request_state(s)``, or the
        comm's opening) carries a fresh snapshot instead, with a new ``seq`` so the
        deltas after it still apply and the ones before it are ignored.
        """
        state: dict[str, Any] = super().get_state(key, drop_defaults=drop_defaults)
        table = getattr(self, "_table", None)  # None while the comm opens in __init__
        if key is None and table is not None and "snapshot_json" in state:
            with self._lock:
                self._seq += 1
                state["snapshot_json"] = table.to_json(self._seq, time.time(),
                                                       self._folding.infos(table.nodes))
        return state

    @property
    def snapshot(self) -> dict[str, Any]:
        """The last snapshot sent: {"seq", "time", "nodes": {name: info}}."""
        import json

        data: dict[str, Any] = json.loads(self.snapshot_json)
        return data

    def counts(self) -> dict[str, int]:
        """Tasks per state, in legend order."""
        with self._lock:
            return self._table.counts()

    def __repr__(self) -> str:
        counts = self.counts()
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        return f"DagWidget({len(self._table.nodes)} tasks: {parts})"


def _all_final(run: Run) -> bool:
    """Every task of ``run`` is final (its end is near): read from the last task in run
    order, usually the last to end, so a running run costs one view."""
    return all(run.task(name).final for name in reversed(run.plan.by_name))
