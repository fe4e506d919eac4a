"""Pickling for executors that send task bodies to other processes (processes, dask).

cloudpickle serialises a function that cannot be imported (one from a notebook
cell, ``__main__`` or a closure) by value, code object and all. Since 3.1.3 it
writes every such code object with the file name ``<dynamic-code>``, so that its
payload is the same wherever the function was defined. A traceback raised on a
worker then names ``<dynamic-code>`` instead of the user's file or cell, and
shows no source line. :func:`dumps` keeps the real file name: code objects are
written with :mod:`marshal`, which keeps every field of them, whatever the
cloudpickle version. (A by-value pickle holds bytecode and so is tied to one
Python version either way; marshal adds no new constraint.)

:func:`unsendable_message` says which part of a task (the function, a global or
closure variable it uses, an input) cannot travel, and what to do about it.
"""

from __future__ import annotations

import copyreg
import io
import marshal
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any, ClassVar

import cloudpickle

__all__ = ["dumps", "loads", "unsendable_message"]


def _code_reduce(code: types.CodeType) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
    return marshal.loads, (marshal.dumps(code),)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with code objects that keep their file name (module doc)."""

    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
        {types.CodeType: _code_reduce},
        getattr(cloudpickle.Pickler, "dispatch_table", copyreg.dispatch_table),
    )

    def reducer_override(self, obj: Any) -> Any:
        """A function without a module (made by ``exec`` in a plain dict) goes by value at
        once: cloudpickle would first search every module in ``sys.modules`` for it, which
        cost such a function about 2.5 ms."""
        if type(obj) is types.FunctionType and obj.__module__ is None:
            return self._dynamic_function_reduce(obj)
        return super().reducer_override(obj)


def dumps(
    value: Any, protocol: int = 5, buffer_callback: Callable[[Any], Any] | None = None
) -> bytes:
    """Pickle ``value`` like ``cloudpickle.dumps``, keeping the file names of its code."""
    with io.BytesIO() as file:
        _Pickler(file, protocol=protocol, buffer_callback=buffer_callback).dump(value)
        return file.getvalue()


loads = cloudpickle.loads


def unsendable_message(label: str, what: str, value: Any, exc: Exception, to: str) -> str:
    """Why ``what`` of task ``label`` (``"function"`` or ``"input 'x'"``) cannot be sent ``to``.

    For a function, names the global or closure variable that does not pickle.
    """
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    where = what
    if what == "function":
        culprit = _culprit(value)
        if culprit is not None:
            name, obj = culprit
            kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
            where = f"global {name!r} used by its code"
    return (f"task {label!r} cannot be sent to {to}: {where} is a {kind}, which "
            f"cannot be serialized ({exc}). Create it inside the task (open the file, make the "
            "lock or the client there), or pass plain data instead.")


def _culprit(fn: Any) -> tuple[str, Any] | None:
    """The global or closure variable of ``fn`` that does not pickle."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    candidates: list[tuple[str, Any]] = []
    globals_ = getattr(fn, "__globals__", {})
    names: list[str] = []
    stack = [code]
    while stack:
        c = stack.pop()
        names.extend(c.co_names)
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    candidates += [(n, globals_[n]) for n in dict.fromkeys(names) if n in globals_]
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            candidates.append((name, cell.cell_contents))
        except ValueError:
            continue
    for name, value in candidates:
        if type(value).__name__ == "module":
            continue
        try:
            dumps(value)
        except Exception:
            return name, value
    return None
