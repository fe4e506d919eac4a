"""The functions an Ephemeral job map's tasks run as under nbflow.

:func:`~nbflow.formats.ephemeral.ephemeral_spec` turns every task of a job map
into an nbflow task whose ``use:`` is one of these adapters:

- :func:`source` (the ``input`` task) hands on the datasource's content;
- :func:`call` (a ``function`` task) calls the job's function on each dict it
  gets, with ``init_args`` as keyword arguments, and returns the dicts it
  produced as one flat list: a returned dict is a list of one;
- :func:`collect` (an ``output`` task) gathers every dict that reached it,
  in input order.

A task's value is therefore always a list of dicts (the ``input`` task's is one
dict). The tasks below the first function task ``map:`` their parent, so the
dicts of the first list returned become branches at run time, and every branch
goes on down the job without waiting for its siblings. A branch that gets a
list from its own upstream branch (a list returned inside a branch) calls the
function on each of its dicts, concurrently when the function is ``async``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ("call", "collect", "normalise", "resolve", "source")


def source(content: Mapping[str, Any]) -> dict[str, Any]:
    """The ``input`` task: the job's datasource content, as a fresh dict."""
    return dict(content)


#: the functions resolved in this process, by (namespace, method, base_dir); they travel
#: with :data:`call` when it is pickled (see :class:`Caller`)
_resolved: dict[tuple[str, str, str | None], Callable[..., Any]] = {}


def resolve(namespace: str, method: str, base_dir: str | None,
            fresh: bool = False) -> Callable[..., Any]:
    """The function a ``namespace`` and ``method`` name: the registered task
    ``namespace.method``, else function ``method`` of the importable module ``namespace``
    (the job file's folder is importable).

    Known functions are looked up again only when ``fresh`` (a job map being loaded): a
    worker uses the ones that came with the task.
    """
    from ..registry import registry
    from ..spec_calls import resolve_function

    key = (namespace, method, base_dir)
    fn = None if fresh else _resolved.get(key)
    if fn is not None:
        return fn
    name = f"{namespace}.{method}"
    if name in registry:
        fn = registry.get(name).fn
    else:
        fn = resolve_function(f"{namespace}:{method}", Path(base_dir) if base_dir else None)
    _resolved[key] = fn
    return fn


def normalise(value: Any, task: str) -> list[dict[str, Any]]:
    """``value`` as a list of dicts: a dict is a list of one; anything else is an error."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    if isinstance(value, list):
        bad = next(v for v in value if not isinstance(v, dict))
        what = f"a list holding a {type(bad).__name__}"
    else:
        what = f"a {type(value).__name__}"
    msg = (f"Ephemeral task {task!r} returned {what}; an Ephemeral function returns a dict "
           "or a list of dicts")
    raise TypeError(msg)  # the task fails, as when the function raises


def _call(data: dict[str, Any] | list[dict[str, Any]], *, task: str, namespace: str,
          method: str, init_args: Mapping[str, Any], base_dir: str | None = None,
          code: str = "") -> list[dict[str, Any]]:
    """A ``function`` task: call the job's function on each dict of ``data``.

    ``data`` is one dict (a branch of a split) or a list of them (a list returned inside
    a branch). Each call gets its dict as the first argument and ``init_args`` as keyword
    arguments; the dicts they return come back as one list, in input order. An ``async``
    function's calls run concurrently, on an event loop of this worker thread (the
    adapter itself is synchronous so that it runs on the task's executor, dask included).
    ``code`` is a hash of the function's code: it is there for the task's cache key only.
    """
    fn = resolve(namespace, method, base_dir)
    inputs = data if isinstance(data, list) else [data]
    for value in inputs:
        if not isinstance(value, dict):
            msg = (f"Ephemeral task {task!r} got a {type(value).__name__}; an Ephemeral "
                   "function takes a dict")
            raise TypeError(msg)  # the task fails, as when the function raises
    kwargs = dict(init_args)
    if inspect.iscoroutinefunction(fn):
        results = _run_async(_gather(fn, inputs, kwargs))
    else:
        results = [fn(value, **kwargs) for value in inputs]
    out: list[dict[str, Any]] = []
    for result in results:
        out.extend(normalise(result, task))
    return out


class Caller:
    """The adapter of ``function`` tasks (:data:`call`), and how the job's functions reach
    process and dask workers.

    Pickled, it takes along the functions resolved in this process: cloudpickle sends
    those of modules beside the job map by value (``spec_calls.import_module`` registers
    them), so workers need not see the job's folder. Unpickled, it adds them to the
    worker's table before anything is resolved there.
    """

    __signature__ = inspect.signature(_call)
    __doc__ = _call.__doc__

    def __call__(self, data: dict[str, Any] | list[dict[str, Any]], *, task: str,
                 namespace: str, method: str, init_args: Mapping[str, Any],
                 base_dir: str | None = None, code: str = "") -> list[dict[str, Any]]:
        return _call(data, task=task, namespace=namespace, method=method,
                     init_args=init_args, base_dir=base_dir, code=code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_caller_with, (dict(_resolved),))

    def __repr__(self) -> str:
        return "nbflow.formats.ephemeral_runtime.call"


def _caller_with(functions: dict[tuple[str, str, str | None], Callable[..., Any]]) -> Caller:
    """The worker's :data:`call`, once the functions it came with are known here."""
    for key, fn in functions.items():
        _resolved.setdefault(key, fn)
    return call


#: the adapter of ``function`` tasks: ``use: nbflow.formats.ephemeral_runtime:call``
call = Caller()


def _run_async(coroutine: Coroutine[Any, Any, list[Any]]) -> list[Any]:
    """Run ``coroutine`` to its end on a loop of its own: in this thread, or, on a thread
    that runs a loop already (the ``inline`` executor's), in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1, thread_name_prefix="nbflow-ephemeral") as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _gather(fn: Callable[..., Any], inputs: list[dict[str, Any]],
                  kwargs: dict[str, Any]) -> list[Any]:
    return list(await asyncio.gather(*(fn(value, **kwargs) for value in inputs)))


def collect(data: Any) -> list[dict[str, Any]]:
    """An ``output`` task: every dict that reached it, flattened in input order.

    ``data`` is its parent's value: a dict (the ``input`` task), a list of dicts (a task
    that was not split) or a list of such lists (one per branch of a split task).
    """
    if isinstance(data, dict):
        return [data]
    out: list[dict[str, Any]] = []
    for value in data:
        out.extend(value if isinstance(value, list) else [value])
    return out
