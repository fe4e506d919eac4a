"""The kernel's default flow, shared by the magics and Python code in the same notebook.

Nothing here imports IPython, so ``import nbflow`` stays IPython-free: the
namespace of a running shell is looked up only when IPython is already loaded.
"""

from __future__ import annotations

import builtins
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidOptionError
from ..flow import Flow
from ..plan import Plan
from ..task import Task
from . import owners

_lock = threading.Lock()
_default: NotebookFlow | None = None


class NotebookFlow(Flow):
    """A :class:`~nbflow.Flow` for notebooks.

    Differences from a plain flow:

    - declaring a task that exists redeclares it (re-running a cell must work),
      so ``@flow.task`` code cells and ``%%nbflow task`` cells can be re-run;
    - a task may not be named like a Python builtin (:func:`builtin_problem`);
    - it knows which cell declared each task, and drops a task that its cell no
      longer declares (see :mod:`.owners`);
    - before planning, task cells re-derive which names they read are tasks and
      which are notebook variables (tasks may be declared in any order);
    - it keeps a :class:`~nbflow.notebook.history.History` of what each task
      last ran with, for ``%nbflow why``, ``%nbflow status`` and :meth:`stale`.
    """

    def __init__(self, name: str = "notebook", *, namespace: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, namespace=namespace, **kwargs)
        from .history import History

        self.history = History()
        #: which cell declared each task (see :mod:`.owners`)
        self.owners = owners.CellOwners()

    def add(self, task: Task) -> Task:
        """Add or redeclare ``task`` (a notebook cell may run many times).

        Raises :class:`~nbflow.errors.InvalidOptionError` for a name that would hide
        a Python builtin (:func:`builtin_problem`).
        """
        problem = builtin_problem(task.name)
        if problem is not None:
            raise InvalidOptionError(task.name, "name", problem)
        self.replace(task)
        owners.record(self, task.name)
        return task

    def stale(self, name: str) -> str | None:
        """Why task ``name``'s last result no longer matches the notebook, or None.

        ``"its code changed"`` when its cell (or function) changed since it ran,
        ``"its upstream 'x' changed"`` when the nearest such upstream is ``x``.
        Only code is compared; ``%nbflow why NAME`` also compares parameters
        and notebook globals. Raises :class:`~nbflow.errors.UnknownTaskError`
        for a name that is not a task.
        """
        super().stale(name)  # checks the name
        from .history import stale_reason

        return stale_reason(self, self.history, name)

    def sync(self) -> list[str]:
        """Rebuild task cells whose upstreams changed; returns their names."""
        from .compiler import resync

        return resync(self)

    def plan(
        self,
        targets: str | Iterable[str] | None = None,
        params: Mapping[str, Any] | None = None,
        force: str | Iterable[str] = (),
    ) -> Plan:
        self.sync()
        return super().plan(targets, params, force)

    def __repr__(self) -> str:
        return f"NotebookFlow({self.name!r}, {len(self)} tasks)"


def builtin_problem(name: str) -> str | None:
    """Why ``name`` cannot name a notebook task, or None.

    The notebook binds each task's result under the task's name, and a cell that
    reads the name becomes a downstream of the task: a task named like a builtin
    (``print``, ``sum``, IPython's ``display``) would hide it from every cell, and
    dropping the task would not bring it back. So such names are refused.
    """
    if name not in vars(builtins):
        return None
    return (f"is a Python builtin: the notebook binds a task's result under the task's "
            f"name, which would hide the builtin {name!r} from every cell; name it {name + '_'!r} "
            "or another word")


def _shell_namespace() -> dict[str, Any] | None:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    shell = ipython.get_ipython()
    return None if shell is None else shell.user_ns


def notebook_flow() -> NotebookFlow:
    """The kernel's default flow: where ``%%nbflow task`` cells declare their tasks.

    Use it from Python in the same notebook to add ``@flow.task`` functions,
    run, or inspect::

        flow = nf.notebook_flow()

        @flow.task
        def load(n=10):
            return list(range(n))

    Its flow parameters are looked up in the notebook namespace.
    """
    global _default
    with _lock:
        if _default is None:
            _default = NotebookFlow("notebook", namespace=_shell_namespace())
        elif _default.namespace is None:
            _default.namespace = _shell_namespace()
        return _default


def reset() -> None:
    """Forget the default flow (its tasks and cached results); the next call makes a new one."""
    global _default
    with _lock:
        _default = None
