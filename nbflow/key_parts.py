"""The parts of a task's cache key beyond its own code, by label, for the key and ``why``.

Starting from the names a task's code reads, :class:`Parts` follows:

- *home* functions and classes (defined where the task is: the notebook, or the task's
  own module): their code (normalised AST), closure values and default values,
  transitively, and the values of the globals they read;
- *local modules* (see :func:`nbflow.code_sources.is_local_module`): their file,
  and the local modules it imports, transitively; a function or class from one also
  covers its closure and default values;
- anything else from a package: the version of its distribution.

Labels read as ``why`` prints them: ``function 'clean'``, ``global 'THRESHOLD'``,
``module helpers``, ``package pandas``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

from .code_sources import (
    code_only_hash,
    distributions_of,
    function_hash,
    is_local_module,
    loaded_source,
    value_hash,
)

__all__ = ["FunctionKey", "Parts", "code_names", "join_parts"]

#: IPython's own history/helper names: never dependencies
IGNORED = frozenset({"In", "Out", "_", "__", "___", "_ih", "_oh", "_dh", "_ii", "_iii",
                     "get_ipython", "exit", "quit"})


def code_names(code: types.CodeType) -> list[str]:
    """The global and attribute names a code object (and the code nested in it) uses."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(code_names(const))
    return names


def join_parts(parts: Mapping[str, str]) -> str:
    """The parts as one string to hash into the key (sorted by label)."""
    return "\n".join(f"{k}={v}" for k, v in sorted(parts.items()))


class Parts:
    """Collects key parts (label -> hash or version) from a home namespace."""

    def __init__(self, home: Mapping[str, Any], *, notebook: bool = False) -> None:
        self.home = home
        self.out: dict[str, str] = {}
        self._seen: set[str] = set()
        self._modules: set[str] = set()
        self._functions: set[int] = set()
        #: a notebook hashes every data global a helper reads (a value that cannot be
        #: hashed stands for its identity); a module hashes only constants (numbers,
        #: strings, tuples of them), and stands for other data by its type, the same in
        #: every process (a module-level list that tasks append to is no input)
        self.notebook = notebook

    def name(self, name: str, via: str | None = None) -> None:
        """Add what the home name ``name`` holds (nothing for builtins and unknowns)."""
        if name in self._seen or name in IGNORED or name not in self.home:
            return
        self._seen.add(name)
        self.value(name, self.home[name], via)

    def value(self, name: str, value: Any, via: str | None) -> None:
        suffix = "" if via is None else f" (read by {via!r})"
        if isinstance(value, types.ModuleType):
            self.module(value)
            if not is_local_module(value):
                self.out[f"module {name!r}"] = value.__name__
            return
        fn = _function_of(value)
        if fn is not None and fn.__globals__ is self.home:
            self.function(name, fn, suffix)
            self.function_refs(fn, name)
            return
        if isinstance(value, type) and value.__module__ == self.home.get("__name__"):
            self.out[f"class {name!r}{suffix}"] = _class_hash(value)
            for member in vars(value).values():
                member_fn = _function_of(member)
                if member_fn is not None and member_fn.__globals__ is self.home:
                    self.function_refs(member_fn, name)
            return
        owner = _module_of(value)
        if owner is not None:
            self.module(owner)
        if fn is not None and owner is not None and is_local_module(owner):
            self.function(name, fn, suffix)  # the module's file covers the code; closure,
            return  # defaults are values made at run time
        if callable(value) or isinstance(value, type):
            if via is None or isinstance(value, type):
                self.out[f"global {name!r}{suffix}"] = (
                    f"{getattr(value, '__module__', '')}."
                    f"{getattr(value, '__qualname__', type(value).__name__)}")
            return
        self.out[f"global {name!r}{suffix}"] = self._data_hash(value)

    def function(self, name: str, fn: types.FunctionType, suffix: str) -> None:
        """A function's code, each closure value and each default value, as separate parts
        (so ``why`` says "closure value 'k' of 'adder' changed")."""
        from .cache import hash_value

        self.out[f"function {name!r}{suffix}"] = code_only_hash(fn)
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            if _filled(cell):
                self.out[f"closure value {var!r} of {name!r}{suffix}"] = \
                    value_hash(cell.cell_contents, hash_value)
        params = fn.__code__.co_varnames[:fn.__code__.co_argcount]
        defaults = fn.__defaults__ or ()
        given = dict(zip(params[len(params) - len(defaults):], defaults))
        given.update(fn.__kwdefaults__ or {})
        for param, default in given.items():
            self.out[f"default {param!r} of {name!r}{suffix}"] = value_hash(default, hash_value)

    def function_refs(self, fn: types.FunctionType, name: str) -> None:
        """The names ``fn`` reads, and functions in its closure or defaults."""
        for ref in code_names(fn.__code__):
            self.name(ref, via=name)
        extra: list[Any] = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        extra.extend(fn.__defaults__ or ())
        extra.extend((fn.__kwdefaults__ or {}).values())
        for value in extra:
            inner = _function_of(value)
            if inner is not None and inner.__globals__ is self.home:
                if id(inner) not in self._functions:
                    self._functions.add(id(inner))
                    self.function_refs(inner, name)
            elif isinstance(value, types.ModuleType) or _module_of(value) is not None:
                owner = value if isinstance(value, types.ModuleType) else _module_of(value)
                if owner is not None:
                    self.module(owner)

    def module(self, module: types.ModuleType) -> None:
        """A local module's file (and its local imports), or a package's version."""
        mod_name = getattr(module, "__name__", "") or ""
        if mod_name in self._modules:
            return
        self._modules.add(mod_name)
        if not is_local_module(module):
            for dist, version in distributions_of(mod_name).items():
                self.out[f"package {dist}"] = version
            return
        source = loaded_source(module)
        self.out[f"module {mod_name}"] = "unreadable" if source is None else source.digest
        if source is None:
            return
        for imported in source.imports:
            sub = sys.modules.get(imported)
            if isinstance(sub, types.ModuleType):
                self.module(sub)

    def _data_hash(self, value: Any) -> str:
        from .cache import hash_value

        kind = f"type:{type(value).__module__}.{type(value).__qualname__}"
        if type(value).__module__.split(".")[0] == "nbflow":  # a flow, a run: not data
            return kind
        if not self.notebook and not _constant(value):
            return kind
        try:
            return hash_value(value)
        except ValueError:
            return f"id:{id(value)}" if self.notebook else kind


class FunctionKey:
    """``Task.key_extra`` of a plain Python task: the parts its code reaches (helpers in
    its module, local modules, package versions, global values), computed at plan time."""

    def __init__(self, fn: types.FunctionType) -> None:
        self.fn = fn
        #: the parts of the last computed key (label -> hash or version)
        self.last: dict[str, str] = {}

    def components(self) -> dict[str, str]:
        parts = Parts(self.fn.__globals__)
        parts._seen.add(self.fn.__name__)  # the task itself: its code is the code key
        parts.function_refs(self.fn, self.fn.__name__)
        # the task's own references are named without "(read by ...)"
        return {k.replace(f" (read by {self.fn.__name__!r})", ""): v
                for k, v in parts.out.items()}

    def __call__(self) -> str:
        self.last = self.components()
        return join_parts(self.last)

    def __reduce__(self) -> tuple[Callable[..., FunctionKey], tuple[Any, ...]]:
        return (FunctionKey, (self.fn,))


def _constant(value: Any) -> bool:
    if isinstance(value, (int, float, complex, str, bytes, type(None))):
        return True
    return isinstance(value, (tuple, frozenset)) and all(_constant(v) for v in value)


def _filled(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:
        return False
    return True


def _function_of(value: Any) -> types.FunctionType | None:
    fn = value
    while hasattr(fn, "__wrapped__") and not isinstance(fn, type):
        fn = fn.__wrapped__
    if isinstance(fn, (types.MethodType, staticmethod, classmethod)):
        fn = fn.__func__
    return fn if isinstance(fn, types.FunctionType) else None


def _module_of(value: Any) -> types.ModuleType | None:
    name = getattr(value, "__module__", None) if callable(value) or isinstance(value, type) \
        else type(value).__module__
    if not isinstance(name, str) or name in ("builtins", "__main__"):
        return None
    mod = sys.modules.get(name)
    return mod if isinstance(mod, types.ModuleType) else None


def _class_hash(cls: type) -> str:
    from .cache import hash_bytes, hash_value

    parts: list[str] = []
    for key, member in sorted(vars(cls).items()):
        parts.append(key)
        fn = _function_of(member)
        if fn is not None:
            parts.append(function_hash(fn))
        elif not key.startswith("__"):
            try:
                parts.append(hash_value(member))
            except ValueError:
                parts.append(repr(type(member)))
    return hash_bytes(*parts)
