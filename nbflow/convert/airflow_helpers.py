"""Helpers that ``nbflow convert --to airflow`` copies into a generated DAG module.

They are written here as ordinary, checked Python; :func:`source` returns the text of
the ones a DAG needs. Each imports Airflow inside itself, so this module imports without
Airflow, and a generated DAG depends on nothing but Airflow and the workflow's own code.
Nothing here is called by nbflow itself.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

#: the XCom key under which a failing task records its error for trigger-rule tasks
ERROR_KEY = "nbflow_error"


class Failed:
    """Stand-in for ``nbflow.Failed``: an upstream that failed (falsy), given to a task
    with ``run_on="failure"`` or ``"always"``; ``error`` is rebuilt from its record."""

    def __init__(self, task: str, error: BaseException, traceback: str = "") -> None:
        self.task, self.error, self.traceback = task, error, traceback

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Failed({self.task!r}, {self.error!r})"


class Skipped:
    """Stand-in for ``nbflow.Skipped``: an upstream that did not run (falsy)."""

    def __init__(self, task: str, reason: str = "") -> None:
        self.task, self.reason = task, reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Skipped({self.task!r}, {self.reason!r})"


def _record_failure(exc: BaseException) -> None:
    """Keep a failing task's error as an XCom, so a trigger-rule task can see it."""
    import traceback

    from airflow.sdk import get_current_context

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    get_current_context()["ti"].xcom_push(
        key=ERROR_KEY, value={"type": type(exc).__name__, "message": str(exc), "traceback": text})


def _upstream_states(names: list[str]) -> dict[str, str]:
    """The states of the task instances of ``names`` in this run (``name`` or ``name_I``)."""
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, task_ids=names, run_ids=[ti.run_id])
    return dict(states.get(ti.run_id, {}))


def _skip_unless_failed(names: list[str]) -> None:
    """``run_on="failure"``: every upstream is done (``all_done``); run only if one failed."""
    from airflow.sdk.exceptions import AirflowSkipException

    if "failed" not in _upstream_states(names).values():
        raise AirflowSkipException("no upstream failed (run_on='failure')")


def _upstream(name: str, mapped: bool) -> Any:
    """An upstream's result as nbflow gives it to a trigger-rule task: its value, or a
    :class:`Failed` / :class:`Skipped` in its place (per branch for a mapped task)."""
    import builtins

    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    states = _upstream_states([name])

    def value(state: str | None, index: int) -> Any:
        if state == "success":
            return ti.xcom_pull(task_ids=name, map_indexes=index)
        if state != "failed":
            return Skipped(name, f"upstream {name!r} ended {state}")
        record = ti.xcom_pull(task_ids=name, key=ERROR_KEY, map_indexes=index) or {}
        cls = getattr(builtins, record.get("type", ""), None)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            cls = RuntimeError
        try:
            error = cls(record.get("message", f"task {name!r} failed"))
        except Exception:  # an exception type with another signature
            error = RuntimeError(record.get("message", ""))
        return Failed(name, error, record.get("traceback", ""))

    if not mapped or name in states:  # a mapped task that never expanded has one instance
        return value(states.get(name), -1)
    branches = sorted((int(key.rpartition("_")[2]), state) for key, state in states.items()
                      if key.rpartition("_")[0] == name)
    return [value(state, i) for i, state in branches]


def _declared(fn: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The values ``fn`` declares: a ``run_if`` predicate gets only the inputs it names."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return values
    return {k: v for k, v in values.items() if k in params}


def _check_run_if(predicate: Any, values: dict[str, Any]) -> None:
    """``run_if``: skip this task (not what follows it) when the predicate is false."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not predicate(**_declared(predicate, values)):
        raise AirflowSkipException("run_if returned False")


def _command(template: str | list[str], values: dict[str, Any], env: dict[str, str],
             shell: str) -> str:
    """A command task's script for ``@task.bash``, with nbflow's placeholder rules:
    values shell-quoted in the string form, whole arguments in the list form."""
    import shlex

    def words(value: Any) -> list[str]:
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]

    if isinstance(template, str):
        quoted = {k: " ".join(shlex.quote(w) for w in words(v)) for k, v in values.items()}
        script = template.format_map(quoted)
        if shell not in ("sh", "bash"):
            script = f"{shell} -c {shlex.quote(script)}"
    else:
        argv: list[str] = []
        for arg in template:
            name = arg[1:-1]
            if arg.startswith("{") and arg.endswith("}") and name in values:
                argv += words(values[name])
            else:
                argv.append(arg.format_map({k: str(v) for k, v in values.items()}))
        script = shlex.join(argv)
    exports = [f"export {k}={shlex.quote(v.format_map(values))}" for k, v in env.items()]
    return "\n".join([*exports, script])


def source(*names: str) -> str:
    """The source text of the named helpers, in the order given."""
    module = sys.modules[__name__]
    parts = [f"{n} = {ERROR_KEY!r}" if n == "ERROR_KEY" else inspect.getsource(getattr(module, n))
             for n in names]
    return "\n\n".join(p.rstrip() + "\n" for p in parts)
