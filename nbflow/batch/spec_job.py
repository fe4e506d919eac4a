"""Workflow specs as batch jobs: ``nbflow run/params/validate`` on a YAML/JSON spec.

A spec's ``parameters`` section is turned into the same
:class:`~nbflow.batch.params.ParametersCell` a notebook's parameters cell
gives, so ``-p``/``-f`` checking, the JSON Schema and the YAML form are shared
with notebooks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import BatchInputError, NbflowError
from ..jsonvalues import jsonable
from ..spec import Spec, flow_from_spec, imported_modules, load_spec
from .params import Parameter, ParametersCell, resolve
from .task_params import split_pairs, task_config

if TYPE_CHECKING:
    from ..events import Observer
    from ..run import Run

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
#: spec parameter type -> JSON Schema type (None: any)
_SCHEMA_TYPES = {"string": "string", "integer": "integer", "number": "number",
                 "boolean": "boolean", "list": "array", "object": "object", "any": None}


def is_spec(path: str | Path) -> bool:
    """True for a path that names a workflow spec rather than a notebook."""
    return Path(path).suffix.lower() in SPEC_SUFFIXES


def spec_parameters(spec: Spec) -> ParametersCell:
    """The spec's parameters, as a notebook's parameters cell would describe them."""
    from ..spec import spec_param

    params: dict[str, Parameter] = {}
    for i, (name, info) in enumerate(spec.parameters.items()):
        has_default = "default" in info
        default = info.get("default")
        params[name] = Parameter(
            name=name,
            type=_SCHEMA_TYPES[info.get("type", "any")],
            default=default,
            has_default=has_default,
            source=repr(default) if has_default else "",
            help=str(info.get("description") or info.get("help") or ""),
            line=spec.lines.get(("parameters", name), i + 1),
            typed=spec_param(spec, name, info),
            declared="in the spec",
        )
    return ParametersCell(notebook=spec.file or spec.name, index=0, parameters=params,
                          kind="spec")


@dataclass
class SpecResult:
    """What ``nbflow run workflow.yaml`` reports."""

    spec: str
    status: str
    duration: float
    summary: str
    exports: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: what produced each exported result: task -> :func:`nbflow.history.lineage.lineage`
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "status": self.status, "duration": self.duration,
                "tasks": self.rows, "exports": jsonable(self.exports),
                "lineage": jsonable(self.lineage)}


def load(path: str | Path) -> Spec:
    """Load and check a spec for the command line (problems become one-line input errors)."""
    try:
        return load_spec(path)
    except NbflowError as exc:
        raise BatchInputError(str(exc)) from None


def validate(path: str | Path) -> str:
    """Load, resolve every function and check the graph; returns what ``nbflow validate`` prints.

    The first line says the spec is valid; then one line per module the spec
    imports (where it comes from and the names used from it), since running a
    spec runs those modules' functions, as a script would.
    """
    spec = load(path)
    try:
        flow = flow_from_spec(spec)
        modules = imported_modules(spec.uses, spec.base_dir)
    except NbflowError as exc:
        raise BatchInputError(str(exc)) from None
    required = [p for p, i in spec.parameters.items() if "default" not in i]
    need = f"; required parameters: {', '.join(required)}" if required else ""
    lines = [f"{path}: valid workflow {flow.name!r}: {len(flow)} tasks, "
             f"{len(spec.parameters)} parameters{need}",
             f"it imports {len(modules)} module(s) and runs their functions when it runs:"]
    width = max((len(m.module) for m in modules), default=0)
    lines += ["  " + m.line(width) for m in modules]
    return "\n".join(lines)


def run_spec(
    path: str | Path,
    pairs: Sequence[tuple[str, str]] = (),
    files: Iterable[str | Path] = (),
    *,
    cache_dir: str | None = None,
    events_log: str | None = None,
    cluster: str | None = None,
    options: Sequence[str] = (),
    observers: Sequence[Observer] = (),
    values: Mapping[str, Any] | None = None,
) -> SpecResult:
    """Check the parameters, run the spec's flow in this process, and summarise it.

    A dotted name in ``pairs`` (``-p TASK.ARG VALUE``) and the ``options`` flags
    (``-c TASK.OPTION=VALUE``) override one task's argument or option for this run
    (:mod:`nbflow.overrides`). ``observers`` get the run's events; those with a ``bind``
    method are given the run once it started (``ResultsDir``, for ``--output DIR``).
    """
    spec = load(path)
    cell = spec_parameters(spec)
    plain, dotted = split_pairs(pairs)
    given = values
    values = resolve(cell, str(path), plain, files, values=given, where="options")
    task_values = task_config(cell, options, dotted)
    missing = [p for p, i in spec.parameters.items() if "default" not in i and p not in values]
    if missing:
        raise BatchInputError(f"{path}: parameter(s) {', '.join(map(repr, missing))} have no "
                              "default; give them with -p NAME VALUE or -f FILE")
    overrides: dict[str, Any] = {}
    if cache_dir:
        overrides["cache_dir"] = cache_dir
    if events_log:
        overrides["events_log"] = events_log
    if cluster:
        overrides.update(executor="dask", cluster=cluster)
    start = time.time()
    from ..history.store import located

    with config.set(**overrides), located(Path(path).resolve().parent / ".nbflow"):
        try:
            flow = flow_from_spec(spec)
        except NbflowError as exc:
            raise BatchInputError(str(exc)) from None
        try:
            run = flow.run(params=values, raise_on_failure=False, background=True,
                           config=task_values, observers=observers)
        except NbflowError as exc:  # a setting that cannot work (NBFLOW_EXECUTOR=nonsense)
            raise BatchInputError(str(exc).splitlines()[0]) from None
    for observer in observers:
        bind = getattr(observer, "bind", None)
        if callable(bind):
            bind(run)
    try:
        run.wait()
    except KeyboardInterrupt:  # run.wait() cancelled the run
        wait_stopped(run)
        raise
    except NbflowError as exc:  # as from the blocking flow.run(): the run could not start
        raise BatchInputError(str(exc).splitlines()[0]) from None
    exports = {}
    for name, task in flow.tasks.items():
        if task.options.export and name in run.results:
            exports[name] = run.results[name]
    summary = run.summary()
    text = str(summary)
    for failure in run.failures:
        text += f"\n--- {failure.label} ---\n{failure.traceback.rstrip()}"
    for name, value in exports.items():
        text += f"\nexport {name} = {_short(value)}"
    from ..history.lineage import lineage

    return SpecResult(str(path), run.status, time.time() - start, text, exports,
                      summary.to_dicts(), {name: lineage(run, name) for name in exports})


#: seconds a Ctrl-C waits for the bodies of stopped tasks (commands, containers) to end
STOP_WAIT = 60.0


def wait_stopped(run: Run, timeout: float = STOP_WAIT) -> None:
    """After a Ctrl-C: wait until the bodies of the run's stopped tasks have ended.

    ``run.wait()`` cancelled the run and returns once the run ended, but a task body
    that a thread runs goes on until it sees the cancel: a command task then stops its
    process group, a container task removes its container (``nbflow/childproc.py``).
    Those threads end with this process, so leaving at once would leave the commands
    running. A second Ctrl-C stops the wait.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its timed wait is the poll's period
    while any(view.still_running for view in run.tasks.values()):
        if time.monotonic() > deadline:
            return
        pause.wait(0.02)


def _short(value: Any, limit: int = 400) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."
