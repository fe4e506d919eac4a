"""Flow: the tasks of one workflow; declaration, validation and the run entry points."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from . import capture, config
from .cache import ResultStore, default_store
from .errors import (
    DuplicateTaskError,
    InvalidOptionError,
    UnknownTaskError,
)
from .eventlog import EventLog
from .plan import Plan, Shape, dependencies
from .planning import build_plan
from .task import Task

if TYPE_CHECKING:
    import graphviz

    from .events import Observer
    from .executors.base import Executor
    from .run import Run
    from .service.background import BackgroundService
    from .typed_params import TypedParam
    from .widget.model import DagWidget

logger = logging.getLogger(__name__)

F = Callable[..., Any]


class Flow:
    """A named set of tasks whose dependencies come from their parameter names.

    Parameters
    ----------
    name
        Shown in messages, events and the widget.
    cache
        Where results are kept between runs (default: an in-memory store owned
        by this flow, or a :class:`~nbflow.DiskStore` in the ``cache_dir``
        setting / ``NBFLOW_CACHE_DIR``), so a re-run reuses every result whose
        key is unchanged.
    namespace
        Optional mapping consulted for flow parameters that ``params=`` does not
        give (the notebook namespace, for flows declared in cells).
    """

    def __init__(
        self,
        name: str = "flow",
        *,
        cache: ResultStore | None = None,
        namespace: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.cache: ResultStore = cache if cache is not None else default_store()
        self.namespace = namespace
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        #: bumped whenever a task is added, replaced or dropped (see _shape)
        self._version = 0
        self._shapes: dict[tuple[int, tuple[str, ...] | None], Shape] = {}
        #: the most recent run started from this flow (None before the first)
        self.last_run: Run | None = None
        #: free text, and per-parameter type/help (set by specs; written back by to_spec)
        self.description = ""
        self.parameter_info: dict[str, dict[str, Any]] = {}
        #: types of flow parameters declared apart from the task functions (a spec's
        #: ``parameters`` block); see :meth:`typed_parameters`
        self.parameter_types: dict[str, TypedParam] = {}
        #: the service that :meth:`serve` started last (None before)
        self.service: BackgroundService | None = None

    @classmethod
    def from_spec(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> Flow:
        """A flow from a YAML/JSON workflow spec (a path or a mapping); see ``docs/specs.md``.

        Raises :class:`~nbflow.errors.SpecError` naming the file, key path and line.
        """
        from .spec import flow_from_spec

        return flow_from_spec(source)

    def to_spec(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """This flow as a spec mapping (written as YAML/JSON when ``path`` is given)."""
        from .spec import dump_spec, flow_to_spec

        data = flow_to_spec(self)
        if path is not None:
            dump_spec(data, path)
        return data

    # -- declaration -------------------------------------------------------------------

    @overload
    def task(self, fn: F, /) -> F: ...
    @overload
    def task(self, *, name: str | None = None, **options: Any) -> Callable[[F], F]: ...

    def task(  # type: ignore[misc]  # mypy cannot match **options against the overloads
        self, fn: F | None = None, /, *, name: str | None = None, **options: Any
    ) -> Any:
        """Declare a task, as ``@flow.task`` or ``@flow.task(option=value, ...)``.

        Options: ``after`` (ordering-only dependencies), ``map`` (run once per
        item of that upstream's result), ``run_on`` (``"success"``,
        ``"failure"``, ``"always"``), ``run_if`` (a predicate of the upstream
        results), ``retries``, ``retry_delay`` (s), ``timeout`` (s),
        ``max_parallel`` (concurrent branches), ``priority`` (higher first),
        ``resources`` (for dask), ``cache``, ``executor``, ``export``, ``group``
        (a label: the widget draws the group's tasks in a box and can collapse
        them into one node), ``image`` (run the function in a container of that
        image, ``docs/containers.md``); for a generator task, which streams
        (``docs/streams.md``): ``buffer`` and ``unbounded``, and ``batch_size``
        on a task that maps one. The function is returned unchanged, so it can
        still be called directly.
        """

        def declare(f: F) -> F:
            self.add(Task.from_function(f, name=name, options=options))
            return f

        if fn is not None:
            if not callable(fn):
                msg = f"@flow.task expects a function, got {fn!r}; use @flow.task(name=...)"
                raise InvalidOptionError(str(name), "fn", msg)
            return declare(fn)
        return declare

    def command(
        self,
        name: str,
        command: str | Sequence[str],
        *,
        outputs: Mapping[str, str] | None = None,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        text: bool = True,
        shell: str = "sh",
        **options: Any,
    ) -> Task:
        """Declare a command task and return it (see ``docs/commands.md``).

        ``command`` is a string run by ``sh -c`` (or ``shell``; values shell-quoted)
        or an argument list run without a shell; its ``{name}`` placeholders (and those of ``env``
        values) are its inputs, ``{job_dir}`` the run's job directory. The options
        are those of :meth:`task`; the value is a :class:`~nbflow.CommandResult`.
        """
        from .commands import command_task

        caller = sys._getframe(1)  # where it was declared, for messages
        return self.add(command_task(name, command, outputs=outputs, stdin=stdin, env=env,
                                     text=text, shell=shell, options=options,
                                     source=f"{caller.f_code.co_filename}:{caller.f_lineno}"))

    def add(self, task: Task) -> Task:
        """Add a task; a second task with the same name is an error."""
        with self._lock:
            if task.name in self._tasks:
                raise DuplicateTaskError(self.name, task.name)
            self._tasks[task.name] = task
            self._version += 1
        return task

    def replace(self, task: Task) -> Task | None:
        """Add or redeclare a task; returns the task it replaced, if any."""
        with self._lock:
            old = self._tasks.get(task.name)
            self._tasks[task.name] = task
            self._version += 1
        return old

    def drop(self, name: str) -> Task:
        """Remove a task from the flow and return it."""
        with self._lock:
            if name not in self._tasks:
                raise UnknownTaskError(self.name, name, "drop()", self._tasks)
            self._version += 1
            return self._tasks.pop(name)

    @property
    def tasks(self) -> Mapping[str, Task]:
        """The declared tasks by name, in declaration order (a read-only view)."""
        return dict(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, {len(self._tasks)} tasks)"

    # -- structure ---------------------------------------------------------------------

    def upstreams(self, name: str) -> tuple[str, ...]:
        """The task's inputs that are tasks of this flow (data dependencies)."""
        task = self._tasks[name]
        return tuple(i for i in task.inputs if i in self._tasks)

    def dependencies(self) -> dict[str, list[str]]:
        """``{task: [every task it waits for]}``: data upstreams then ``after=``."""
        return dependencies(self.tasks)

    def parameters(self) -> dict[str, Any]:
        """Flow parameters (inputs that are not tasks) and their defaults (``...`` if none)."""
        out: dict[str, Any] = {}
        for task in self._tasks.values():
            for i in task.inputs:
                if i not in self._tasks and (i not in out or out[i] is ...):
                    out[i] = task.defaults.get(i, ...)
        return out

    def typed_parameters(self, names: Iterable[str] | None = None) -> dict[str, TypedParam]:
        """The flow parameters (of ``names``, default all) that have a declared type: from
        :attr:`parameter_types`, else the first task whose signature annotates them
        (``Annotated[int, Field(ge=1)]``). ``run(params=...)`` checks these values."""
        from .typed_params import function_params

        wanted = set(self.parameters() if names is None else names)
        out = {n: t for n, t in self.parameter_types.items() if n in wanted}
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            if not wanted.intersection(task.inputs) or task.command is not None:
                continue
            for name, typed in function_params(task.fn).items():
                if name in wanted and name not in self._tasks:
                    out.setdefault(name, typed)
        return out

    def to_graphviz(self, states: Mapping[str, str] | None = None) -> graphviz.Digraph:
        """The tasks as a ``graphviz.Digraph`` to customise (needs ``nbflow[widget]``).

        Render it without a ``dot`` binary with :func:`nbflow.widget.draw`.
        """
        from .widget.layout import to_graphviz

        return to_graphviz(self, states)

    def stale(self, name: str) -> str | None:
        """Why task ``name``'s last result no longer matches its declaration, or None.

        A plain flow keys results by content and never holds stale ones; the
        notebook's flow overrides this for tasks whose cell changed since they ran.
        """
        if name not in self._tasks:
            raise UnknownTaskError(self.name, name, "stale()", self._tasks)
        return None

    def widget(self) -> DagWidget:
        """The live DAG widget of this flow (states of its last run; needs ``nbflow[widget]``)."""
        from .widget import DagWidget

        return DagWidget(self)

    # -- validation --------------------------------------------------------------------

    def plan(
        self,
        targets: str | Iterable[str] | None = None,
        params: Mapping[str, Any] | None = None,
        force: str | Iterable[str] = (),
    ) -> Plan:
        """Validate and freeze what a run of ``targets`` needs.

        Tasks named in ``force`` recompute whatever the cache holds, and their
        results replace the cached ones; they are run even if ``targets`` do not
        need them. Raises a :class:`~nbflow.errors.ValidationError` (unknown
        names with suggestions, cycles with their path, bad ``map=``, missing
        parameters) before anything runs.
        """
        with self._lock:
            tasks = dict(self._tasks)
        params = dict(params or {})
        if params:  # each value of a typed parameter, checked and coerced (pydantic)
            from .typed_params import check_params

            params = check_params(self.typed_parameters(params), params)
        if isinstance(targets, str):
            targets = [targets]
        forced = {force} if isinstance(force, str) else set(force)
        for t in forced:
            if t not in tasks:
                raise UnknownTaskError(self.name, t, "run(force=...)", tasks)
        target_list = list(targets) if targets is not None else list(tasks)
        for t in target_list:
            if t not in tasks:
                raise UnknownTaskError(self.name, t, "run(targets=...)", tasks)
        if targets is not None:
            target_list += sorted(forced - set(target_list))

        shape = self._shape(tasks, None if targets is None else tuple(target_list))
        return build_plan(self.name, tasks, shape, params, forced, self.namespace,
                          self.parameters)

    def _shape(self, tasks: dict[str, Task], targets: tuple[str, ...] | None) -> Shape:
        """The graph shape of a run of ``targets``: kept until a task is added, replaced or
        dropped, since a notebook runs the same flow again and again."""
        with self._lock:
            key = (self._version, targets)
            cached = self._shapes.get(key)
        if cached is not None and cached.tasks == tuple(tasks.values()):
            return cached
        shape = Shape.build(self.name, tasks, targets)
        with self._lock:
            if len(self._shapes) >= 8:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    # -- running -----------------------------------------------------------------------

    def run(
        self,
        targets: str | Sequence[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        executor: str | Executor | None = None,
        background: bool = False,
        raise_on_failure: bool = True,
        observers: Iterable[Observer] = (),
        force: str | Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> Run:
        """Run what ``targets`` need (all tasks by default) and return the :class:`Run`.

        Tasks named in ``force`` are recomputed even when the cache has their
        result, and the new result replaces the cached one. ``config`` overrides
        one task's options or arguments for this run: ``{"clean.retries": 2,
        "clean.threshold": 0.5}`` (see :mod:`nbflow.overrides`).

        Blocks until the run ends unless ``background=True``. A run with failed
        tasks raises :class:`~nbflow.FlowFailed` unless ``raise_on_failure=False``.
        A keyboard interrupt (kernel interrupt) cancels the run and is re-raised.
        Works the same from a script, a thread, or a cell of a running kernel:
        the scheduler has its own event loop thread.
        """
        run = self._start(targets, params, executor, observers, force, config)
        if background:
            return run
        run.wait()
        if raise_on_failure:
            run.raise_for_failure()
        return run

    async def run_async(
        self,
        targets: str | Sequence[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        executor: str | Executor | None = None,
        raise_on_failure: bool = True,
        observers: Iterable[Observer] = (),
        force: str | Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> Run:
        """Like :meth:`run`, awaited from async code (any event loop, or the scheduler's)."""
        run = self._start(targets, params, executor, observers, force, config)
        await run.wait_async()
        if raise_on_failure:
            run.raise_for_failure()
        return run

    def stream(
        self,
        outputs: str | Sequence[str],
        *,
        params: Mapping[str, Any] | None = None,
        executor: str | Executor | None = None,
        ordered: bool = False,
        observers: Iterable[Observer] = (),
        force: str | Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> Iterator[Any]:
        """Run what ``outputs`` need in the background and yield their results as they
        come: each branch of a mapped or streaming task once it succeeded, in the order
        they finish (``ordered=True``: in branch order); with several outputs,
        ``(task, value)`` pairs. Leaving the loop cancels the run; an unbounded stream
        runs until then. See :meth:`Run.stream` and ``docs/streams.md``.
        """
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        run = self._start(names, params, executor, observers, force, config)
        return run.stream(names if len(names) > 1 else names[0], ordered=ordered)

    def serve(
        self,
        *,
        watch: str | os.PathLike[str] | None = None,
        pattern: str = "*",
        recursive: bool = False,
        param: str = "path",
        existing: bool = False,
        stable: float = 1.0,
        http: str | None = None,
        token: str | None = None,
        concurrency: int = 1,
        state_dir: str | os.PathLike[str] | None = None,
        cluster: str | None = None,
        shared: Iterable[str] = (),
    ) -> BackgroundService:
        """Serve this flow in the background: each new stable file in ``watch`` (its path
        as parameter ``param``) and each ``POST /jobs`` on ``http`` (``"HOST:PORT"``)
        becomes a job, a run with its own parameters, cache and job directory, up to
        ``concurrency`` at once; the ``max_parallel`` of the ``shared`` tasks holds across
        all jobs. Jobs are kept in SQLite in ``state_dir`` (default:
        ``.nbflow`` here), so they survive the kernel. Returns the running service
        (``.jobs()``, ``.submit(**params)``, ``.stop()``); ``%nbflow status`` lists its
        jobs. See ``docs/service.md``.
        """
        from .service.background import serve_flow

        if self.service is not None and self.service.running:
            self.service.stop()
        self.service = serve_flow(
            self, watch=watch, pattern=pattern, recursive=recursive, param=param,
            existing=existing, stable=stable, http=http, token=token,
            concurrency=concurrency, state_dir=state_dir, cluster=cluster, shared=shared)
        return self.service

    def _start(
        self,
        targets: str | Sequence[str] | None,
        params: Mapping[str, Any] | None,
        executor: str | Executor | None,
        observers: Iterable[Observer],
        force: str | Iterable[str] = (),
        overrides: Mapping[str, Any] | None = None,
    ) -> Run:
        from .executors import resolve_executor
        from .history.recorder import Recorder
        from .overrides import plan_with_config
        from .run import Run

        plan = plan_with_config(self, targets, params, force, overrides)
        capture.install()
        observers = list(observers)
        log = EventLog.from_config()  # the events_log setting / NBFLOW_EVENTS_LOG
        if log is not None:
            observers.append(log)
        recorder = Recorder.from_config()  # the run history (NBFLOW_HISTORY=0: off)
        if recorder is not None:
            observers.append(recorder)
        chosen = resolve_executor(executor)
        if any(pt.task.options.image is not None for pt in plan.tasks):
            from .containers import preflight

            preflight([pt.task for pt in plan.tasks], chosen.name,
                      str(config.get("container_engine")))
        run = Run(plan, chosen, self.cache, observers=observers)
        run.config = dict(overrides or {})
        for observer in observers:
            if isinstance(observer, (EventLog, Recorder)):  # they read this run's results
                observer.bind(run)
        self.last_run = run
        run.start()
        return run
