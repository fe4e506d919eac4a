"""The functions a spec names: finding and importing them, and calling them with their arguments.

A spec is code, like a script: ``use: "os:system"`` imports ``os`` and calls
``os.system`` with the spec's arguments. Loading a spec imports every module
it names (their top-level code runs) and calls nothing; running it calls the
functions. :func:`imported_modules` lists those modules (``nbflow validate``
prints them).

A spec may name a module that sits next to it. Its directory is put on
``sys.path`` only while that module is imported, and after the standard
library's entries, so a ``statistics.py`` beside a spec never replaces the
standard library's ``statistics``; ``sys.path`` is restored afterwards. Such
modules are pickled by value (cloudpickle), so process and dask workers,
which cannot import them by name, still run their functions.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import keyword
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .cache import hash_bytes, hash_value
from .errors import SpecError, suggest
from .registry import registry
from .task import code_hash

REFS = ("$task", "$param", "$value")
#: top-level names of the modules imported from beside a spec
_from_specs: set[str] = set()


# -- importing ----------------------------------------------------------------------------


def _stdlib_dirs() -> set[str]:
    paths = sysconfig.get_paths()
    stdlib = str(Path(paths["stdlib"]).resolve())
    dirs = {stdlib, str(Path(paths["platstdlib"]).resolve()), str(Path(stdlib, "lib-dynload"))}
    zip_name = f"python{sys.version_info[0]}{sys.version_info[1]}.zip"
    dirs.add(str(Path(stdlib).parent / zip_name))
    return dirs


@contextlib.contextmanager
def spec_dir_on_path(base_dir: Path | None) -> Iterator[None]:
    """``base_dir`` on ``sys.path`` inside the block, after the standard library's entries."""
    if base_dir is None:
        yield
        return
    entry = str(base_dir.resolve())
    if entry in sys.path:
        yield
        return
    stdlib = _stdlib_dirs()
    resolved = [str(Path(p or ".").resolve()) for p in sys.path]
    after = [i for i, p in enumerate(resolved) if p in stdlib]
    sys.path.insert(after[-1] + 1 if after else 0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _beside(base_dir: Path | None, top: str) -> Path | None:
    """The file or package named ``top`` in ``base_dir``, if there is one."""
    if base_dir is None:
        return None
    for candidate in (base_dir / f"{top}.py", base_dir / top / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_stdlib(name: str) -> bool:
    return name.partition(".")[0] in sys.stdlib_module_names


def _is_within(module: ModuleType, base_dir: Path) -> bool:
    file = getattr(module, "__file__", None)
    return isinstance(file, str) and Path(file).resolve().is_relative_to(base_dir.resolve())


def import_module(module_name: str, base_dir: Path | None = None) -> ModuleType:
    """Import ``module_name`` for a spec in ``base_dir``; SpecError when it cannot be imported."""
    top = module_name.partition(".")[0]
    local = None if _is_stdlib(top) else _beside(base_dir, top)
    loaded = sys.modules.get(top)
    if local is not None and loaded is not None and base_dir is not None \
            and not _is_within(loaded, base_dir):
        if top in _from_specs:  # another spec's module of the same name: import this one
            for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                del sys.modules[name]
        else:
            where = getattr(loaded, "__file__", None) or "a built-in module"
            msg = (f"{local} beside the spec cannot be imported as {top!r}: a module of that "
                   f"name is already imported in this process (from {where}); rename the file")
            raise SpecError(msg)
    try:
        with spec_dir_on_path(base_dir if local is not None else None):
            module = importlib.import_module(module_name)
    except Exception as exc:
        msg = f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        raise SpecError(msg) from exc
    if local is not None and base_dir is not None and _is_within(module, base_dir):
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[top])
        _from_specs.add(top)
    return module


def resolve_function(name: str, base_dir: Path | None = None) -> Callable[..., Any]:
    """A registered task (``namespace.function``) or an importable ``package.module:function``.

    A module that sits in ``base_dir`` (the spec's directory) can be named,
    except one named like a standard library module.
    """
    if ":" not in name:
        return registry.get(name).fn
    module_name, _, attr = name.partition(":")
    target: Any = import_module(module_name, base_dir)
    for part in attr.split("."):
        if not hasattr(target, part):
            known = [n for n in dir(target) if not n.startswith("_")]
            msg = f"{module_name!r} has no attribute {part!r}." + suggest(part, known)
            shadow = _beside(base_dir, module_name.partition(".")[0])
            if _is_stdlib(module_name) and shadow is not None:
                msg += (f" ({shadow} is not used: {module_name.partition('.')[0]!r} is a "
                        "standard library module; rename the file)")
            raise SpecError(msg)
        target = getattr(target, part)
    if not callable(target):
        raise SpecError(f"{name!r} is not callable")
    return target  # type: ignore[no-any-return]


def importable_name(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` when ``fn`` can be imported back by that name, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is fn else None


@dataclass(frozen=True)
class ModuleUse:
    """A module a spec imports, where it comes from, and the names the spec uses from it."""

    module: str
    origin: str
    uses: tuple[str, ...]

    def line(self, width: int = 0) -> str:
        return f"{self.module.ljust(width)}  {self.origin}: {', '.join(self.uses)}"


def imported_modules(uses: list[str], base_dir: Path | None = None) -> list[ModuleUse]:
    """The modules behind the ``use:``/``run_if:`` names of a spec (each already imported)."""
    by_module: dict[str, list[str]] = {}
    package: dict[str, str | None] = {}
    for use in uses:
        if ":" in use:
            module = use.partition(":")[0]
        else:
            task = registry.get(use)
            module = task.module
            package[module] = task.package
        by_module.setdefault(module, [])
        if use not in by_module[module]:
            by_module[module].append(use)
    out = []
    for module, names in by_module.items():
        out.append(ModuleUse(module, _origin(module, package.get(module), base_dir), tuple(names)))
    return out


def _origin(name: str, package: str | None, base_dir: Path | None) -> str:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if _is_stdlib(name):
        return "standard library"
    if module is not None and base_dir is not None and _is_within(module, base_dir):
        return f"beside the spec ({file})"
    if package is None:
        from importlib.metadata import packages_distributions

        dists = packages_distributions().get(name.partition(".")[0])
        package = dists[0] if dists else None
    if package is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"package {package} {version(package)} ({file})"
        except PackageNotFoundError:
            return f"package {package} ({file})"
    return f"module file {file}" if file else "built-in module"


# -- calling --------------------------------------------------------------------------------


class SpecCall:
    """The function of a spec task: binds references and literals to the target's arguments.

    Its signature lists the task's inputs (referenced tasks and parameters), so
    nbflow derives dependencies from it exactly as from a hand-written task.
    """

    def __init__(self, use: str, fn: Callable[..., Any], refs: dict[str, tuple[str, str]],
                 literals: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.use = use
        self.fn = fn
        #: a generator function streams (``Task.from_function`` reads this)
        self.is_stream = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        #: target argument -> ("task" | "param", input name)
        self.refs = refs
        #: target argument -> literal value
        self.literals = literals
        inputs = list(dict.fromkeys(name for _, name in refs.values()))
        #: the task's inputs: names of tasks and parameters, which need not be identifiers
        #: (``in``, ``combined-output``), so they are given as they are, not as a signature
        self.task_inputs = tuple(inputs)
        self.task_defaults = {i: defaults[i] for i in inputs if i in defaults}
        if all(i.isidentifier() and not keyword.iskeyword(i) for i in inputs):
            self.__signature__ = inspect.Signature([
                inspect.Parameter(i, inspect.Parameter.KEYWORD_ONLY,
                                  default=defaults.get(i, inspect.Parameter.empty))
                for i in inputs
            ])

    def __call__(self, **inputs: Any) -> Any:
        kwargs = dict(self.literals)
        for arg, (_, name) in self.refs.items():
            kwargs[arg] = inputs[name]
        return self.fn(**kwargs)

    def args_spec(self) -> dict[str, Any]:
        """The ``args`` mapping this call was built from."""
        out: dict[str, Any] = {}
        for arg, value in self.literals.items():
            out[arg] = {"$value": value} if looks_like_ref(value) else value
        for arg, (kind, name) in self.refs.items():
            out[arg] = {f"${kind}": name}
        return out

    def code_key(self) -> str:
        try:
            literals = hash_value(self.literals)
        except ValueError:
            literals = repr(self.literals)
        return hash_bytes(self.use, code_hash(self.fn), literals, repr(sorted(self.refs.items())))

    def __repr__(self) -> str:
        return f"SpecCall({self.use!r})"


class SpecCondition:
    """A spec task's ``run_if``: the predicate gets the task's arguments by their names.

    ``run_if: testtasks.is_big`` on a task with ``args: {value: {$task: total}}``
    calls ``is_big(value=<total's result>)``. A predicate that takes ``**kwargs``
    gets every argument.
    """

    def __init__(self, use: str, predicate: Callable[..., Any], call: SpecCall) -> None:
        self.use = use
        self.predicate = predicate
        self.call = call
        self.task_inputs, self.task_defaults = call.task_inputs, call.task_defaults
        if hasattr(call, "__signature__"):
            self.__signature__ = call.__signature__
        params = inspect.signature(predicate).parameters.values()
        self._names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        #: the predicate takes ``**kwargs``: it gets every argument, not only the named ones
        self._takes_all = any(p.kind is p.VAR_KEYWORD for p in params)

    def __call__(self, **inputs: Any) -> Any:
        args = dict(self.call.literals)
        for arg, (_, name) in self.call.refs.items():
            args[arg] = inputs[name]
        if self._takes_all:
            return self.predicate(**args)
        return self.predicate(**{n: args[n] for n in self._names if n in args})

    def __repr__(self) -> str:
        return f"SpecCondition({self.use!r})"


class AsyncSpecCall(SpecCall):
    """A :class:`SpecCall` of an ``async def`` function."""

    async def __call__(self, **inputs: Any) -> Any:
        return await super().__call__(**inputs)


class AsyncStreamSpecCall(SpecCall):
    """A :class:`SpecCall` of an ``async def`` generator: it streams on the run's loop."""

    async def __call__(self, **inputs: Any) -> Any:  # an async generator, like its target
        async for item in super().__call__(**inputs):
            yield item


def spec_call_class(fn: Callable[..., Any]) -> type[SpecCall]:
    """The :class:`SpecCall` kind that calls ``fn`` the way ``fn`` must be called."""
    if inspect.isasyncgenfunction(fn):
        return AsyncStreamSpecCall
    return AsyncSpecCall if inspect.iscoroutinefunction(fn) else SpecCall


def looks_like_ref(value: Any) -> bool:
    """True for ``{$task: ...}``, ``{$param: ...}`` and ``{$value: ...}``."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in REFS


def nested_ref(value: Any) -> bool:
    """True when a reference sits inside a list or mapping (not allowed)."""
    if isinstance(value, dict):
        return any(k in REFS or nested_ref(v) for k, v in value.items())
    if isinstance(value, list):
        return any(nested_ref(v) for v in value)
    return False
