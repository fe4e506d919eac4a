"""DagWidget: the live DAG of a flow or a run, as an anywidget.

What travels to the front end (``widget.js``):

- ``svg``: the Graphviz layout, sent once per structure change. Layouts run in
  another process (:mod:`nbflow.widget.service`); meanwhile the front end keeps
  painting states on the previous layout, or shows a "laying out" note.
- ``snapshot``: every node's info (state, times, attempts, branches, details), sent
  when a run is attached, at most every ``snapshot_every`` seconds, and at the end.
- ``delta``: the nodes that changed since the last delta, at most one delta every
  ``interval`` seconds (about 10 per second). Details that the panel shows (error
  traceback, result preview, captured output) travel with the delta of the state
  change that produced them, because the front end's messages are not handled
  while a cell runs.

The widget is an observer of run events: it runs on the event dispatcher thread
and never blocks the scheduler's loop or the kernel's.
"""

from __future__ import annotations

import json
import logging
import reprlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from .. import capture
from ..events import Event, RunEvent, TaskEvent
from ..executors import resolve_executor
from ..states import FINAL as TERMINAL
from ..states import OK
from .layout import STATES, STYLES, Structure, colour_svg, placeholder_svg, structure_of, \
    to_graphviz
from .service import LayoutService, get_service

if TYPE_CHECKING:
    from ..flow import Flow
    from ..run import Run
    from ..views import TaskView

logger = logging.getLogger(__name__)

_HERE = Path(__file__).parent
#: characters of a result preview, a traceback or a captured stream sent to the panel
PREVIEW_CHARS = 20_000
_repr = reprlib.Repr()
_repr.maxstring = 400
_repr.maxother = 400
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 20

#: ``runner(targets, force)`` starts a background run of the flow and returns it
Runner = Callable[[Sequence[str] | None, Sequence[str]], "Run"]


class DagWidget(anywidget.AnyWidget):
    """The live DAG of a flow (``flow.widget()``) or of one run (``run.widget()``).

    Parameters
    ----------
    flow
        The flow whose tasks are drawn (None: only the run's plan is drawn).
    run
        A run to follow; its states colour the nodes while it runs.
    runner
        Starts background runs for the node and toolbar actions
        (default: :func:`start_run` on ``flow``).
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
    #: JSON of {"seq", "time", "nodes": {name: info}}: every node. A string, not a Dict:
    #: ipywidgets walks a Dict value in Python looking for binary buffers, which for a
    #: 2,000-node snapshot stalled the caller for ~20 ms; json.dumps runs in C.
    snapshot_json = traitlets.Unicode("{}").tag(sync=True)
    #: {"seq", "time", "nodes": {name: info}}: the nodes changed since the last delta
    delta = traitlets.Dict().tag(sync=True)
    run_status = traitlets.Unicode("").tag(sync=True)
    #: the dask dashboard of the followed run's cluster ("" when there is none)
    dashboard = traitlets.Unicode("").tag(sync=True)
    #: whether node actions (re-run, run what it needs) can start runs
    actions = traitlets.Bool(False).tag(sync=True)
    styles = traitlets.Dict(STYLES).tag(sync=True)
    legend = traitlets.List(list(STATES)).tag(sync=True)

    #: seconds between two deltas (at most ~10 updates per second)
    interval = 0.1
    #: the widget reads a mapped task's progress from the run's records on its own clock
    #: (:meth:`_tick`), so the scheduler need not build an event for every branch
    wants_branch_events = False
    #: seconds between two full snapshots during a run
    snapshot_every = 2.0
    #: seconds ``_repr_mimebundle_`` waits for a layout that is still being computed
    static_wait = 5.0

    def __init__(self, flow: Flow | None = None, run: Run | None = None, *,
                 runner: Runner | None = None, service: LayoutService | None = None,
                 **kwargs: Any) -> None:
        if flow is None and run is None:
            raise TypeError("DagWidget needs a flow or a run")
        super().__init__(**kwargs)
        self._flow = flow
        self._service = service if service is not None else get_service()
        self._runner = runner
        self._lock = threading.RLock()
        self._run: Run | None = None
        #: the run whose full snapshot was taken (after attach, on a helper thread)
        self._snapshot_of: Run | None = None
        self._structure: Structure | None = None
        self._layout_key = ""
        self._nodes: dict[str, dict[str, Any]] = {}
        self._touched: set[str] = set()
        self._detailed: set[str] = set()
        self._details: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._last_delta = 0.0
        self._last_snapshot = 0.0
        self._timer: threading.Timer | None = None
        #: number of deltas sent (for tests and benchmarks)
        self.deltas_sent = 0
        self.actions = flow is not None or runner is not None
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
            self._nodes = self._flow_nodes(run)
            self._send_snapshot()

    def _set_structure(self, structure: Structure) -> None:
        key = structure.key
        self.flow_name = structure.flow
        self._structure = structure
        if key == self._layout_key:
            return
        self._layout_key = key
        svg = self._service.cached(key)
        if svg is not None:
            self._show_layout(structure, svg)
            return
        self.layout_status = "pending"
        future = self._service.layout(key, lambda: to_graphviz(structure).source)
        future.add_done_callback(lambda f: self._layout_done(structure, key, f))

    def _layout_done(self, structure: Structure, key: str, future: Any) -> None:
        with self._lock:
            if key != self._layout_key:
                return  # the structure changed again meanwhile
            error = future.exception()
            if error is not None:
                logger.warning("nbflow widget: %s", error)
                self.layout_status = str(error)
                return
            self._show_layout(structure, future.result())

    def _show_layout(self, structure: Structure, svg: str) -> None:
        with self.hold_sync():
            self.graph = structure.to_json()
            self.svg = svg
            self.layout_status = "ready"

    def wait_layout(self, timeout: float | None = 30) -> bool:
        """Block until the current layout is available (True) or ``timeout`` passes."""
        key = self._layout_key
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._service.cached(key) is None or self.layout_status == "pending":
            if self.layout_status not in ("pending", "ready"):
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- following a run ------------------------------------------------------------------------

    def attach(self, run: Run) -> None:
        """Follow ``run``: its states colour the nodes from now on."""
        with self._lock:
            self._run = run
            self._detailed = set()
            self._details = {}
            self._touched = set()
            source: Any = self._flow if self._flow is not None else run.plan
            self._set_structure(structure_of(source))
            run.observe(self)  # before the snapshot: nothing between them is lost
        self._tick(run)
        # Reading 2,000 records and sending them takes tens of ms: not on the caller's
        # (the kernel's) thread.
        threading.Thread(target=self._attach_snapshot, args=(run,), name="nbflow-widget",
                         daemon=True).start()

    def _attach_snapshot(self, run: Run) -> None:
        with self._lock:
            if run is not self._run or self._snapshot_of is run:
                return
            self._snapshot_of = run
            if self._flow is not None:
                self._nodes = self._flow_nodes(run)
            else:
                self._nodes = {pt.name: self._info(run.record(pt.name)) for pt in run.plan.tasks}
            self.run_status = _final_status(run)
            self.dashboard = run.dashboard_link or ""
            self._send_snapshot()

    @property
    def run(self) -> Run | None:
        """The run this widget follows (None for a flow that has not run)."""
        return self._run

    def __call__(self, events: Sequence[Event]) -> None:
        """Observer: note which tasks changed; send a delta when the throttle allows."""
        run = self._run
        if run is None:
            return
        run_id = run.id
        touched = self._touched
        final = False
        for event in events:
            if event.run_id != run_id:
                continue
            if type(event) is TaskEvent:
                touched.add(event.task)
            elif type(event) is RunEvent and event.status in TERMINAL:
                final = True
        if final:
            self.flush(final=True)
        elif touched:
            self._schedule()

    def _tick(self, run: Run) -> None:
        """While ``run`` goes on: every interval, refresh its mapped tasks that are under way."""
        if run is not self._run or run.done:
            return
        plan = run.plan.by_name
        moving = [name for name, state in run.states.items()
                  if state in ("ready", "running", "retrying") and plan[name].mapped]
        if moving:
            with self._lock:
                self._touched.update(moving)
            self._schedule()
        timer = threading.Timer(self.interval, self._tick, args=(run,))
        timer.daemon = True
        timer.start()

    def _schedule(self) -> None:
        wait = self.interval - (time.monotonic() - self._last_delta)
        if wait <= 0:
            self.flush()
            return
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self, final: bool = False) -> None:
        """Send the pending changes now (one delta; a snapshot too when due or final)."""
        with self._lock:
            timer, self._timer = self._timer, None
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()
            run = self._run
            names, self._touched = self._touched, set()
            if run is None:
                return
            if final and self._snapshot_of is not run:
                self._attach_snapshot(run)  # the helper thread has not got to it yet
            changed: dict[str, dict[str, Any]] = {}
            for name in names:
                try:
                    info = self._info(run.record(name))
                except KeyError:
                    continue
                self._nodes[name] = info
                changed[name] = info
            now = time.monotonic()
            status = _final_status(run) if final else run.status
            self._seq += 1
            with self.hold_sync():
                if changed:
                    self.delta = {"seq": self._seq, "time": time.time(), "nodes": changed}
                    self.deltas_sent += 1
                self.run_status = status
                if not self.dashboard:  # known once the run's executor connected
                    self.dashboard = run.dashboard_link or ""
                if final or now - self._last_snapshot >= self.snapshot_every:
                    self._send_snapshot()
            self._last_delta = now

    def _send_snapshot(self) -> None:
        self._seq += 1
        self._last_snapshot = time.monotonic()
        self.snapshot_json = json.dumps(
            {"seq": self._seq, "time": time.time(), "nodes": self._nodes}, default=str)

    @property
    def snapshot(self) -> dict[str, Any]:
        """The last snapshot sent: {"seq", "time", "nodes": {name: info}}."""
        data: dict[str, Any] = json.loads(self.snapshot_json)
        return data

    # -- node info ----------------------------------------------------------------------------------

    def _flow_nodes(self, run: Run | None) -> dict[str, dict[str, Any]]:
        """Nodes of the whole flow: the last run's states, else history, else pending."""
        flow = self._flow
        assert flow is not None
        history = getattr(flow, "history", None)
        nodes: dict[str, dict[str, Any]] = {}
        in_run = set(run.plan.by_name) if run is not None else set()
        for name in flow.tasks:
            if name in in_run:
                assert run is not None
                info = self._info(run.record(name))
            elif name in self._nodes:  # not in this run: what the widget showed before
                info = self._nodes[name]
            else:
                snap = history.get(name) if history is not None else None
                info = {"s": snap.state if snap is not None else "pending"}
            if info["s"] in OK and history is not None and _stale(flow, history, name):
                info["s"] = "stale"
            nodes[name] = info
        return nodes

    def _info(self, rec: TaskView) -> dict[str, Any]:
        state = rec.state
        info: dict[str, Any] = {"s": state, "a": rec.attempts}
        if rec.started is not None:
            info["t0"] = rec.started
        if rec.ended is not None and state in TERMINAL:
            info["t1"] = rec.ended
        if rec.where:
            info["w"] = rec.where
        if rec.mapped:
            info["d"] = rec.done
            info["n"] = rec.branches
            info["c"] = dict(rec.counts)
        if state in TERMINAL:
            name = rec.name
            if name not in self._detailed:
                self._detailed.add(name)
                self._details[name] = _details(rec, self._run)
            info.update(self._details.get(name, {}))
        return info

    # -- actions from the front end ---------------------------------------------------------------

    def _on_message(self, widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict):
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
        last run's targets again: failed tasks recompute).
        """
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
            targets = [task, *sorted(self._descendants(task))]
            return self._start(targets, targets)
        if action == "needs" and task is not None:
            return self._start([task], ())
        if action == "rerun_failed":
            again = [pt.name for pt in run.plan.tasks] if run is not None else None
            return self._start(again, ())
        raise ValueError(f"unknown widget action {action!r} (task {task!r})")

    def _start(self, targets: Sequence[str] | None, force: Sequence[str]) -> Run:
        if self._runner is not None:
            new = self._runner(targets, force)
        elif self._flow is not None:
            new = start_run(self._flow, targets, force)
        else:
            raise ValueError("this widget shows a run without its flow; it cannot start runs")
        self.attach(new)
        return new

    def _descendants(self, name: str) -> set[str]:
        structure = self._structure
        if structure is None or name not in structure.names:
            return set()
        children: dict[int, list[int]] = {}
        for u, d in structure.edges:
            children.setdefault(u, []).append(d)
        out: set[int] = set()
        stack = list(children.get(structure.names.index(name), ()))
        while stack:
            i = stack.pop()
            if i not in out:
                out.add(i)
                stack.extend(children.get(i, ()))
        return {structure.names[i] for i in out}

    # -- display ------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Tasks per state, in legend order."""
        counts: dict[str, int] = {}
        for info in self._nodes.values():
            state = "pending" if info["s"] == "ready" else info["s"]
            counts[state] = counts.get(state, 0) + 1
        order = {s: i for i, s in enumerate(STATES)}
        return dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order))))

    def static_svg(self, timeout: float | None = 0) -> str:
        """The current state as a standalone SVG (legend included).

        Waits up to ``timeout`` seconds for a layout still being computed; without one,
        a small placeholder SVG says so.
        """
        structure = self._structure
        assert structure is not None
        if timeout:
            self.wait_layout(timeout)
        svg = self._service.cached(self._layout_key)
        if svg is None:
            return placeholder_svg(structure)
        with self._lock:
            nodes = dict(self._nodes)
        return colour_svg(svg, nodes)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)
        bundle = data[0] if isinstance(data, tuple) else data
        assert isinstance(bundle, dict)
        bundle["image/svg+xml"] = self.static_svg(self.static_wait)
        return data

    def __repr__(self) -> str:
        counts = self.counts()
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        return f"DagWidget({len(self._nodes)} tasks: {parts})"


def _final_status(run: Run) -> str:
    status = run._sm.status  # the scheduler's own status is final before run.done is set
    return str(status)


def _stale(flow: Flow, history: Any, name: str) -> bool:
    from ..notebook.history import code_stale

    return bool(code_stale(flow, history, name))


def _details(rec: TaskView, run: Run | None) -> dict[str, Any]:
    """What the details panel shows for a finished task: error, result preview, output."""
    out: dict[str, Any] = {}
    if rec.error is not None:
        out["err"] = _clip(rec.error.traceback)
    elif rec.state == "skipped" and rec.skip_reason:
        out["why"] = rec.skip_reason
    if rec.state in OK:
        if run is not None and run.executor.remote:
            out["res"] = {"text": "(the result stays on the cluster)"}
        else:
            out["res"] = preview(run.results[rec.name] if run is not None else None)
    texts: list[str] = []
    errs: list[str] = []
    for branch, cap in sorted(rec.output.items(), key=lambda kv: kv[0] or 0)[:5]:
        label = "" if branch is None else f"[{rec.name}[{branch}]]\n"
        if cap.stdout:
            texts.append(label + cap.text("stdout"))
        if cap.stderr:
            errs.append(label + cap.text("stderr"))
    if texts:
        out["out"] = _clip("".join(texts))
    if errs:
        out["stderr"] = _clip("".join(errs))
    return out


def preview(value: Any) -> dict[str, str]:
    """``{"html": ...}`` from ``_repr_html_`` when the value has one, else a short repr."""
    html = getattr(value, "_repr_html_", None)
    if callable(html) and not isinstance(value, type):
        try:
            text = html()
        except Exception:  # a broken repr must not break the widget
            text = None
        if isinstance(text, str) and len(text) <= PREVIEW_CHARS:
            return {"html": text}
    try:
        return {"text": _clip(_repr.repr(value))}
    except Exception as exc:
        return {"text": f"(repr failed: {type(exc).__name__}: {exc})"}


def _clip(text: str) -> str:
    if len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + f"\n... ({len(text) - PREVIEW_CHARS} more characters)"


def start_run(flow: Flow, targets: Sequence[str] | None = None, force: Iterable[str] = (),
              observers: Iterable[Any] = ()) -> Run:
    """Start a background run of ``targets``; tasks in ``force`` recompute (no cache).

    A forced task has no cache key for this run, so it and what depends on it run.
    """
    from ..run import Run

    plan = flow.plan(targets)
    forced = set(force)
    for pt in plan.tasks:
        if pt.name in forced:
            pt.params_key = None
    capture.install()
    run = Run(plan, resolve_executor(None), flow.cache, observers=observers)
    flow.last_run = run
    run.start()
    return run
