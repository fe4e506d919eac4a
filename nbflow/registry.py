"""Tasks contributed by installed packages, through the ``nbflow.tasks`` entry point group.

A package registers a module::

    [project.entry-points."nbflow.tasks"]
    xarray = "nbflow_xarray.tasks"

Every public function of that module (its ``__all__``, else the functions it
defines whose names do not start with ``_``) becomes the registered task
``xarray.<function>``. The functions are plain Python: the workflow (a spec, a
notebook, a flow) decides options such as ``retries`` or ``map``. Keep the
module cheap to import (heavy imports inside the functions): ``nbflow tasks``
imports every registered module.

Discovery is lazy and cached; :meth:`Registry.reset` forgets it (tests). A
module that fails to import is recorded in :attr:`Registry.errors` and does not
break the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import RegistryError, suggest

logger = logging.getLogger(__name__)

GROUP = "nbflow.tasks"


@dataclass(frozen=True)
class RegisteredTask:
    """A function contributed by an installed package."""

    #: "namespace.function", as specs and ``nbflow tasks`` name it
    name: str
    fn: Callable[..., Any]
    #: the distribution (package) that registered it, if known
    package: str | None
    #: the module it came from
    module: str

    @property
    def doc(self) -> str:
        """The first line of the function's docstring."""
        text = inspect.getdoc(self.fn) or ""
        return text.strip().splitlines()[0] if text.strip() else ""

    @property
    def parameters(self) -> list[inspect.Parameter]:
        """The function's parameters (names, defaults, annotations)."""
        return list(inspect.signature(self.fn).parameters.values())


class Registry:
    """The tasks of every installed ``nbflow.tasks`` entry point, found on first use."""

    def __init__(self, group: str = GROUP) -> None:
        self.group = group
        self._tasks: dict[str, RegisteredTask] | None = None
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget what was discovered; the next lookup discovers again."""
        with self._lock:
            self._tasks = None
            self._errors = {}

    def _discover(self) -> dict[str, RegisteredTask]:
        with self._lock:
            if self._tasks is not None:
                return self._tasks
            tasks: dict[str, RegisteredTask] = {}
            errors: dict[str, str] = {}
            for ep in importlib.metadata.entry_points(group=self.group):
                package = ep.dist.name if ep.dist is not None else None
                try:
                    module = importlib.import_module(ep.value)
                except Exception as exc:  # a broken extension must not break the others
                    where = f"{ep.name} = {ep.value!r}" + (f" (package {package})" if package else "")
                    errors[ep.name] = f"{where}: {type(exc).__name__}: {exc}"
                    # recorded in .errors, which `nbflow tasks` and lookups report
                    logger.info("nbflow task module %s failed to import: %s", ep.value, exc)
                    continue
                for fn_name, fn in module_tasks(module).items():
                    name = f"{ep.name}.{fn_name}"
                    tasks[name] = RegisteredTask(name, fn, package, module.__name__)
            self._tasks, self._errors = tasks, errors
            return tasks

    @property
    def errors(self) -> dict[str, str]:
        """Entry points whose module failed to import: name -> what went wrong."""
        self._discover()
        return dict(self._errors)

    def get(self, name: str) -> RegisteredTask:
        """The registered task ``name``; raises :class:`~nbflow.errors.RegistryError`."""
        tasks = self._discover()
        try:
            return tasks[name]
        except KeyError:
            namespace, _, short = name.rpartition(".")
            siblings = {n.rpartition(".")[2]: n for n in tasks if n.rpartition(".")[0] == namespace}
            hint = suggest(short, siblings) if siblings else suggest(name, tasks)
            for bare, full in siblings.items():  # suggest full names, not function names
                hint = hint.replace(repr(bare), repr(full))
            msg = f"no registered task {name!r}." + hint
            if namespace in self._errors:
                msg += f" Its package failed to import: {self._errors[namespace]}"
            elif tasks:
                msg += " `nbflow tasks` lists the registered ones."
            else:
                msg += " No package registers tasks (entry point group 'nbflow.tasks')."
            raise RegistryError(msg) from None

    def __contains__(self, name: object) -> bool:
        return name in self._discover()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._discover()))

    def __len__(self) -> int:
        return len(self._discover())

    def __repr__(self) -> str:
        if self._tasks is None:
            return "Registry(not yet discovered)"
        return f"Registry({len(self._tasks)} tasks, {len(self._errors)} broken)"


def module_tasks(module: types.ModuleType) -> dict[str, Callable[..., Any]]:
    """The public functions of a task module: its ``__all__``, else what it defines."""
    names = getattr(module, "__all__", None)
    out: dict[str, Callable[..., Any]] = {}
    if names is not None:
        for name in names:
            fn = getattr(module, name, None)
            if callable(fn):
                out[name] = fn
        return out
    for name, fn in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        if fn.__module__ == module.__name__:
            out[name] = fn
    return out


#: the registry of installed packages (``nbflow.registry``)
registry = Registry()
