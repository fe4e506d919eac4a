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
  travel with the delta of the state change that produced them, because the front
  end's messages are not handled while a cell runs.
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
from .actions import Runner, default_runner, rerun_failed, rerun_task
from .collapse import CHAIN_MIN, Folding
from .layout import STATES, STYLES, Fold, Structure, state_rules, structure_of, to_graphviz
from .nodes import PREVIEW_CHARS, NodeTable, available_actions, moving, preview, \
    result_preview, shown_status, status_line as line_of_run
from .service import LayoutService, get_service
from .static import output_metadata, picture_svg, pictures, png_of, start_png
from .throttle import Throttle

if TYPE_CHECKING:
    from ..flow import Flow
    from ..run import Run
    from ..views import TaskView

__all__ = ("PREVIEW_CHARS", "DagWidget", "Runner", "default_runner", "preview")

logger = logging.getLogger(__name__)

_HERE = Path(__file__).parent

class DagWidget(anywidget.AnyWidget):
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
    #: seconds ``_repr_mimebundle_`` waits for a layout that is still being computed
    static_wait = 5.0
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
        self._shown: Structure | None = None
        self._layout_key = ""
        #: set when the current layout is shown or failed (wait_layout waits on it)
        self._layout_settled = threading.Event()
        self._seq = 0
        self._last_snapshot = float("-inf")
        #: number of deltas sent (for tests and benchmarks)
        self.deltas_sent = 0
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
            self._set_structure(structure_of(flow))
            self._table.follow(run.id if run is not None else None)
            self._table.flow_nodes(flow, run.tasks if run is not None else {},
                                   result_preview(run))
            self._send_snapshot()

    def _set_structure(self, structure: Structure) -> None:
        self._structure = structure
        self._draw(self._folding.set_structure(structure))

    def _draw(self, shown: Structure) -> None:
        """Lay out ``shown`` (the structure drawn), unless it is drawn already."""
        key = shown.key
        self.flow_name = shown.flow
        self._shown = shown
        if key == self._layout_key:
            return
        self._layout_key = key
        graph = self._folding.graph_json()
        svg = self._service.cached(key)
        if svg is not None:
            self._show_layout(graph, svg)
            return
        self._layout_settled.clear()
        self.layout_status = "pending"
        future = self._service.layout(key, lambda: to_graphviz(shown).source)
        future.add_done_callback(lambda f: self._layout_done(graph, key, f))

    def _layout_done(self, graph: dict[str, Any], key: str, future: Any) -> None:
        with self._lock:
            if key != self._layout_key:
                return  # the structure changed again meanwhile
            error = future.exception()
            if error is not None:
                logger.warning("nbflow widget: %s", error)
                self.layout_status = str(error)
                self._layout_settled.set()
                return
            self._show_layout(graph, future.result())

    def _show_layout(self, graph: dict[str, Any], svg: str) -> None:
        with self.hold_sync():
            self.graph = graph
            self.svg = svg
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
        """Follow ``run``; ``observing``: the widget observes it from its start already."""
        with self._lock:
            self._run = run
            self._snapshot_of = None
            self._ended = None
            self._pending = {}
            self._touched = set()
            self._moving = set()
            self._table.follow(run.id)
            source: Any = self._flow if self._flow is not None else run.plan
            self._set_structure(structure_of(source))
            if run.done or all(view.final for view in run.tasks.values()):
                # It ended (its final event may not reach us): show it now. Not observing
                # it also keeps clear of a run ending while an observer is added (its
                # end waited on an event thread not yet started, and never came).
                self._take_snapshot(run)
                return
            if not observing:
                run.observe(self)  # before the snapshot: nothing between them is lost
        # Reading 2,000 views and sending them takes tens of ms: not on the caller's
        # (the kernel's) thread.
        threading.Thread(target=self._attach_snapshot, args=(run,), name="nbflow-widget",
                         daemon=True).start()

    def _attach_snapshot(self, run: Run) -> None:
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

    # -- actions from the front end ---------------------------------------------------------------

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

    # -- collapsing groups and chains -------------------------------------------------------------

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

    # -- display ------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Tasks per state, in legend order."""
        with self._lock:
            return self._table.counts()

    def static_svg(self, timeout: float | None = 0) -> str:
        """The current state as a standalone SVG (legend included).

        Waits up to ``timeout`` seconds for a layout still being computed; without one,
        a small placeholder SVG says so. A run that ended is shown in its final states.
        """
        nodes = self._static_nodes()
        if timeout:
            self.wait_layout(timeout)
        assert self._shown is not None
        return picture_svg(self._service, self._shown, self._layout_key, nodes)

    def static_png(self, timeout: float | None = 30) -> str | None:
        """The current state as a PNG, base64-encoded as Jupyter stores images.

        The same picture as :meth:`static_svg`, drawn by the layout process (a layout
        of its own). None if it fails or takes longer than ``timeout`` seconds.
        """
        nodes = self._static_nodes()
        if self._shown is None:
            return None
        return png_of(start_png(self._service, self._shown, nodes), timeout)

    def static_pictures(self, wait: float | None = None) -> dict[str, str]:
        """The DAG's pictures as a MIME bundle (SVG, and PNG when drawn in time), in
        the current (for an ended run, final) states; see :mod:`nbflow.widget.static`."""
        nodes = self._static_nodes()  # first: it applies a run's final states
        assert self._shown is not None
        return pictures(self._service, self._shown, self._layout_key, nodes,
                        self.wait_layout, self.static_wait if wait is None else wait)

    def _static_nodes(self) -> dict[str, dict[str, Any]]:
        """Every node's info (collapsed ones too), final once the followed run ended.

        A run is done once its events were handed to observers, but an observer
        removed or slow might not have flushed the final ones: flush them here, so a
        displayed widget of an ended run never stores a mid-run picture.
        """
        run = self._run
        if run is not None and run.done and self._ended is None:
            self.flush(final=True)
        with self._lock:
            return {**self._table.nodes, **self._folding.infos(self._table.nodes)}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, plus the DAG as SVG and as PNG (untrusted notebooks show no
        SVG; nbconvert's HTML and GitHub show either), in the same (final) states; the
        metadata names the kernel that drew it (:func:`.static.output_metadata`)."""
        images = self.static_pictures()
        shown = super()._repr_mimebundle_(**kwargs)
        data, metadata = shown if isinstance(shown, tuple) else (shown, {})
        assert isinstance(data, dict)
        data.update(images)
        return data, {**(metadata or {}), **output_metadata()}

    def __repr__(self) -> str:
        counts = self.counts()
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        return f"DagWidget({len(self._table.nodes)} tasks: {parts})"

