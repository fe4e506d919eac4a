"""Task views -> the JSON nodes the front end paints; pure, no widget library needed.

The widget sends each task as a small dict (the *node info*), keyed by short
names because a 2,000-node snapshot travels as one JSON string:

====== ==========================================================================
``s``  state (a task state, or ``stale``)
``a``  attempts
``t0`` when the first attempt started (``time.time()``)
``t1`` when it ended (final states only)
``w``  where it ran: "thread nbflow-worker-1", "pid 4242", a dask worker address
``d``  a mapped task's branches that ended, ``n`` its number of branches,
       ``c`` the ended branches by state
``err`` the error traceback; ``exc`` its exception line (``ValueError: ...``),
       shown first; ``why`` why it was skipped; ``stale`` why its result is stale
``res`` a result preview (``{"html": ...}`` or ``{"text": ...}``)
``out`` / ``stderr``: what it printed
``g``  only on a collapsed group or chain (its kind): ``d``/``n``/``c`` then
       count its member tasks (:mod:`nbflow.widget.collapse`)
``st``  a streaming task: ``done`` the items its consumers finished with, ``rate``
       items per second (``n`` counts the items made)
``cmd`` a command task's command (as declared, then the line that ran), ``host`` the
       host it ran on, ``img`` the container image of a task with ``image=``
====== ==========================================================================

The details (``err``, ``exc``, ``why``, ``res``, ``out``, ``stderr``) are built once, when
the task ends, and travel with the state change that produced them: the kernel does
not handle the front end's messages while a synchronous cell runs, so the panel
cannot count on asking later.

Which buttons the front end shows (:func:`available_actions`) and its status line
(:func:`status_line`) are decided here too, so the front end shows what Python says.

Everything here reads :class:`~nbflow.views.TaskView` objects and public
``Flow``/``Run`` attributes only; :class:`NodeTable` is what
:class:`~nbflow.widget.model.DagWidget` keeps and sends.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..notebook.cells import relabel_traceback
from ..states import ACTIVE, FINAL, OK, run_status
from .layout import DRAWN_AS, INITIAL, STATES

if TYPE_CHECKING:
    from ..flow import Flow
    from ..run import Run
    from ..views import TaskView

#: characters of a result preview, a traceback or a captured stream sent to the panel
PREVIEW_CHARS = 20_000
#: captured outputs of a mapped task's branches shown in the panel
OUTPUT_BRANCHES = 5
#: the panel's result of a task that ran on a cluster (fetching it could be large and slow)
REMOTE_RESULT = "(the result stays on the cluster)"

#: JSON text of a node info (what cannot be encoded becomes its ``str``)
_encode = json.JSONEncoder(default=str).encode

_repr = reprlib.Repr()
_repr.maxstring = 400
_repr.maxother = 400
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 20

#: ``result(name)`` -> the preview of task ``name``'s result (called once it succeeded)
ResultPreview = Callable[[str], dict[str, str]]

#: states of a mapped task whose branches are under way (their progress moves)
MOVING: frozenset[str] = ACTIVE | {"ready"}
#: characters of a command line in a node's info (it travels with every change of the task)
COMMAND_CHARS = 2_000
#: characters of the exception line shown above the traceback
EXCEPTION_CHARS = 500

#: what the front end's buttons ask for (see :func:`available_actions`): the toolbar's
#: ``cancel`` and ``rerun_failed``, the details panel's ``rerun``, ``needs`` and
#: ``cancel_task`` (shown for nodes in a state ``state_rules()["open"]`` lists)
ACTIONS: tuple[str, ...] = ("cancel", "rerun_failed", "rerun", "needs", "cancel_task")


def node_info(view: TaskView) -> dict[str, Any]:
    """The node info of a task without its details: state, attempts, times, branches."""
    state = view.state
    info: dict[str, Any] = {"s": state, "a": view.attempts}
    if view.started is not None:
        info["t0"] = view.started
    if view.ended is not None and view.final:
        info["t1"] = view.ended
    if view.where:
        info["w"] = view.where
    if view.mapped:
        info["d"] = view.done
        info["n"] = view.branches
        info["c"] = dict(view.counts)
    if view.stream:
        rate = view.rate
        info["st"] = {"done": view.consumed, "rate": None if rate is None else round(rate, 1)}
    if view.command is not None:
        info["cmd"] = clip(view.command, COMMAND_CHARS)
    if view.host:
        info["host"] = view.host
    if view.image:
        info["img"] = view.image
    return info


def details(view: TaskView, result: ResultPreview | None = None) -> dict[str, Any]:
    """What the details panel shows for a finished task: error, result preview, output.

    Parameters
    ----------
    view
        The task once it ended.
    result
        Previews the task's result by name (see :func:`result_preview`); None shows
        no result.
    """
    out: dict[str, Any] = {}
    if view.error is not None:
        # frames of notebook helpers name their cell (<cell In[N]>), not ipykernel's file
        out["err"] = clip(relabel_traceback(view.error.traceback))
        line = exception_line(view.error.traceback)
        if line:
            out["exc"] = line
    elif view.state == "skipped" and view.skip_reason:
        out["why"] = view.skip_reason
    if view.ok and result is not None:
        out["res"] = result(view.name)
    texts: list[str] = []
    errs: list[str] = []
    branches = sorted(view.output.items(), key=lambda kv: kv[0] or 0)[:OUTPUT_BRANCHES]
    for branch, cap in branches:
        label = "" if branch is None else f"[{view.name}[{branch}]]\n"
        if cap.stdout:
            texts.append(label + cap.text("stdout"))
        if cap.stderr:
            errs.append(label + cap.text("stderr"))
    if texts:
        out["out"] = clip("".join(texts))
    if errs:
        out["stderr"] = clip("".join(errs))
    return out


def preview(value: Any) -> dict[str, str]:
    """``{"html": ...}`` from ``_repr_html_`` when the value has one, else a short repr.

    A broken or huge ``_repr_html_`` falls back to the repr, and a broken repr
    to a note: a user's object must not break the widget.
    """
    html = getattr(value, "_repr_html_", None)
    if callable(html) and not isinstance(value, type):
        try:
            text = html()
        except Exception:
            text = None
        if isinstance(text, str) and len(text) <= PREVIEW_CHARS:
            return {"html": text}
    try:
        return {"text": clip(_repr.repr(value))}
    except Exception as exc:
        return {"text": f"(repr failed: {type(exc).__name__}: {exc})"}


def result_preview(run: Run | None) -> ResultPreview:
    """Previews of ``run``'s results; a run on a remote executor keeps them there."""
    if run is None:
        return lambda name: preview(None)
    if run.executor.remote:
        return lambda name: {"text": REMOTE_RESULT}
    results = run.results
    return lambda name: preview(results[name])


def clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters)"


def exception_line(traceback: str) -> str:
    """The exception a traceback ends with (``ValueError: total 14 is no good``).

    The text after the last frame line (frame and code lines are indented), so a
    message over several lines is kept whole and a chained exception gives the last
    one; cut to :data:`EXCEPTION_CHARS`.
    """
    lines = traceback.rstrip().splitlines()
    start = len(lines)
    while start > 0 and lines[start - 1] and not lines[start - 1][0].isspace() \
            and not lines[start - 1].startswith("Traceback ("):
        start -= 1
    text = "\n".join(lines[start:]).strip() or (lines[-1].strip() if lines else "")
    if len(text) > EXCEPTION_CHARS:
        text = text[:EXCEPTION_CHARS] + "…"
    return text


def available_actions(status: str, failed: int, can_run: bool) -> list[str]:
    """The actions whose buttons the front end shows (a subset of :data:`ACTIONS`).

    Parameters
    ----------
    status
        The status of the run the widget follows ("" before any run).
    failed
        That run's failed tasks.
    can_run
        Whether the widget has a runner (a widget of a run without its flow has none).

    Cancelling applies only while a run goes on; starting a run only when none of the
    widget's goes on (one at a time); re-running a task once there was a run, and
    re-running the failed ones only when that run has some.
    """
    going = status in ("pending", "running")
    if going:
        return ["cancel", "cancel_task"]
    out: list[str] = []
    if can_run and status:
        if failed:
            out.append("rerun_failed")
        out.append("rerun")
    if can_run:
        out.append("needs")
    return out


def status_line(status: str, failed: int, failed_shown: int = 0) -> str:
    """The run part of the widget's status line; never "succeeded" beside a failed node.

    Parameters
    ----------
    status
        The followed run's status ("" before any run).
    failed
        That run's failed tasks: a run with one is drawn failed, whatever it says.
    failed_shown
        Nodes drawn failed, counting tasks that failed in an earlier run and were not
        in this one.
    """
    if not status:
        return "not run yet"
    tasks = "task" if failed == 1 else "tasks"
    if status not in FINAL:
        return f"run {status}" + (f" · {failed} failed {tasks}" if failed else "")
    if failed:
        shown = "failed" if status in OK else status
        return f"run {shown} ({failed} failed {tasks})"
    earlier = failed_shown - failed
    if status in OK and earlier > 0:
        tasks = "task" if earlier == 1 else "tasks"
        return f"run ended ({earlier} failed {tasks} from an earlier run)"
    return f"run {status}"


def moving(view: TaskView) -> bool:
    """True for a mapped task whose branches are under way (no event per branch says so)."""
    return view.mapped and view.state in MOVING


def shown_status(run: Run) -> str:
    """The run's status as the widget shows it: final as soon as every task is.

    ``run.status`` says ``running`` until the run's last events were delivered; a
    widget attached at that moment gets no final event, so it reads the tasks.
    """
    status: str = run.status
    if status in FINAL or run.done:
        return status
    views = run.tasks.values()
    if views and all(view.final for view in views):
        return run_status({view.state for view in views})
    return status


def counts(nodes: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Nodes per state as drawn (``ready`` counts as ``pending``), in legend order."""
    out: dict[str, int] = {}
    for info in nodes.values():
        state = str(info.get("s", INITIAL))
        state = DRAWN_AS.get(state, state)
        out[state] = out.get(state, 0) + 1
    order = {s: i for i, s in enumerate(STATES)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


class NodeTable:
    """Every node's info, built from the views of one run (and a flow's other tasks).

    Not thread-safe: the widget calls it under its own lock.
    """

    def __init__(self) -> None:
        #: name -> node info: what the last snapshot or delta said about each node
        self.nodes: dict[str, dict[str, Any]] = {}
        #: the run whose views the details come from
        self._run_id: str | None = None
        #: the view each node was last built from (views are rebuilt on every change)
        self._views: dict[str, TaskView] = {}
        #: details of the run's tasks that ended (built once per task and run)
        self._details: dict[str, dict[str, Any]] = {}
        #: name -> the node info the last snapshots encoded, and its JSON text (two
        #: dicts, no tuple per node: fewer objects for the garbage collector)
        self._encoded: dict[str, Mapping[str, Any]] = {}
        self._texts: dict[str, str] = {}

    @property
    def run_id(self) -> str | None:
        """The run whose views the table follows."""
        return self._run_id

    def failed(self) -> list[str]:
        """The followed run's tasks that failed, as the table last saw them."""
        return [name for name, view in self._views.items() if view.state == "failed"]

    def follow(self, run_id: str | None) -> None:
        """Build details from run ``run_id`` from now on (the nodes stay until replaced)."""
        if run_id != self._run_id:
            self._run_id = run_id
            self._views = {}
            self._details = {}

    def info(self, view: TaskView, result: ResultPreview | None) -> dict[str, Any]:
        """The node info of ``view``, with its details once it ended."""
        info = node_info(view)
        if view.final:
            name = view.name
            extra = self._details.get(name)
            if extra is None:
                extra = self._details[name] = details(view, result)
            info.update(extra)
        return info

    def update(self, view: TaskView, result: ResultPreview | None) -> dict[str, Any] | None:
        """Take ``view`` into the table; returns its new node info, or None if unchanged."""
        if self._views.get(view.name) is view:
            return None
        self._views[view.name] = view
        info = self.info(view, result)
        self.nodes[view.name] = info
        return info

    def run_nodes(self, views: Mapping[str, TaskView], result: ResultPreview | None) -> None:
        """The nodes are the run's tasks, as ``views`` show them."""
        self._views = dict(views)
        self.nodes = {name: self.info(view, result) for name, view in views.items()}

    def flow_nodes(self, flow: Flow, views: Mapping[str, TaskView],
                   result: ResultPreview | None) -> None:
        """The nodes are the flow's tasks: the run's states for tasks in ``views``, else
        what the table showed before, else what the flow remembers, else pending.

        A task whose result is stale (:meth:`Flow.stale <nbflow.Flow.stale>` gives a
        reason) is drawn ``stale``; the reason goes to its panel.
        """
        nodes: dict[str, dict[str, Any]] = {}
        plain: dict[str, dict[str, Any]] = {}  # one info per state (infos are never changed)
        for name in flow.tasks:
            view = views.get(name)
            if view is not None:
                self._views[name] = view
                info = self.info(view, result)
            elif name in self.nodes:  # not in this run: what the widget showed before
                info = self.nodes[name]
            else:
                state = remembered_state(flow, name) or INITIAL
                info = plain.setdefault(state, {"s": state})
            if info["s"] in OK:
                reason = flow.stale(name)
                if reason is not None:
                    info = {**info, "s": "stale", "stale": reason}
            nodes[name] = info
        self.nodes = nodes

    def counts(self) -> dict[str, int]:
        """Nodes per state, in legend order (see :func:`counts`)."""
        return counts(self.nodes)

    def to_json(self, seq: int, time: float,
                extra: Mapping[str, Mapping[str, Any]] | None = None) -> str:
        """The snapshot message: ``{"seq", "time", "nodes"}`` as JSON text.

        ``extra`` adds nodes that are no tasks: the collapsed groups and chains
        (:meth:`nbflow.widget.collapse.Folding.infos`).
        Text rather than a dict trait: ipywidgets walks a dict value in Python looking
        for binary buffers, which for a 2,000-node snapshot stalled the caller for
        ~20 ms. Each node's text is kept until its info changes (infos are replaced,
        never changed in place), so a snapshot encodes only the nodes that changed,
        and never holds the GIL for one long ``json.dumps`` of every node.
        """
        nodes = {**self.nodes, **extra} if extra else self.nodes
        encoded, texts = self._encoded, self._texts
        shared: dict[int, str] = {}  # the text of an info several nodes share, by its id
        parts = []
        for name, info in nodes.items():
            if encoded.get(name) is not info:
                text = shared.get(id(info))
                if text is None:
                    text = shared[id(info)] = _encode(info)
                encoded[name] = info
                texts[name] = f"{_encode(name)}: {text}"
            parts.append(texts[name])
        if len(encoded) > len(nodes):  # nodes left the table: forget them
            self._encoded = {name: encoded[name] for name in nodes}
            self._texts = {name: texts[name] for name in nodes}
        body = ", ".join(parts)
        return f'{{"seq": {_encode(seq)}, "time": {_encode(time)}, "nodes": {{{body}}}}}'


def remembered_state(flow: Flow, name: str) -> str | None:
    """The state task ``name`` ended in when it last ran, if the flow keeps a history.

    The notebook's flow keeps one (``flow.history``), so a widget shown after
    several runs colours tasks that were not in the last one. Plain flows do not.
    """
    history = getattr(flow, "history", None)
    snap = history.get(name) if history is not None else None
    state = getattr(snap, "state", None)
    return None if state is None else str(state)
