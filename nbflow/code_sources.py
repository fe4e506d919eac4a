"""Hashes of code as a cache key sees it: functions by normalised AST, local module files,
package versions.

- A function is hashed from its source's AST without line and column information
  (docstrings kept, decorator lines dropped), so an edit that only touches comments or
  formatting keeps its key. Its closure values and default values are part of it.
- A *local* module (its file is not inside site-packages, dist-packages or the standard
  library: a ``.py`` beside the notebook, an editable install) is hashed by its file's
  normalised AST, once per ``(path, mtime_ns, size)``. The hash of each top-level
  definition is kept too, so :func:`describe_change` can say which one changed.
- A third-party module stands for the version of its distribution
  (:func:`importlib.metadata.packages_distributions`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import inspect
import os
import sys
import sysconfig
import textwrap
import threading
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ModuleSource", "code_only_hash", "describe_change", "distributions_of", "function_hash",
           "is_local_module", "loaded_source", "module_details", "module_source", "reset", "value_hash"]

_lock = threading.Lock()
#: id(code) -> (code, hash of its source's AST): a code object never changes
_code_memo: dict[int, tuple[types.CodeType, str]] = {}
#: path -> (mtime_ns, size, ModuleSource)
_file_memo: dict[str, tuple[int, int, ModuleSource]] = {}
#: digest -> ModuleSource, to compare an earlier version of a file with the current one
_by_digest: dict[str, ModuleSource] = {}
#: module file -> local?
_local_memo: dict[str, bool] = {}
#: (tuple(sys.path)) -> packages_distributions(), and (dist, sys.path) -> version
_dists_memo: dict[tuple[str, ...], dict[str, list[str]]] = {}
_version_memo: dict[tuple[str, tuple[str, ...]], str] = {}


def reset() -> None:
    """Forget every memo (tests; after installing packages in a running process)."""
    with _lock:
        for memo in (_code_memo, _file_memo, _by_digest, _local_memo, _dists_memo,
                     _version_memo, _loaded):
            memo.clear()


def _digest(*parts: str | bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def normalised(tree: ast.AST) -> str:
    """``ast.dump`` without positions: comments and formatting do not show."""
    return ast.dump(tree, include_attributes=False)


# -- functions ------------------------------------------------------------------------------


def function_hash(fn: Any) -> str:
    """A hash of a function's code (normalised AST, else bytecode), closure and defaults."""
    from .cache import hash_value  # local: cache imports task types

    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    parts = [_code_source_hash(target, code)]
    for cell in getattr(target, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        parts.append(value_hash(value, hash_value))
    for defaults in (getattr(target, "__defaults__", None), getattr(target, "__kwdefaults__", None)):
        if defaults:
            parts.append("defaults=" + value_hash(defaults, hash_value))
    return _digest(*parts)


def value_hash(value: Any, hash_value: Any) -> str:
    """A closure or default value's hash: a function's by :func:`function_hash`."""
    if isinstance(value, types.FunctionType):
        return "fn:" + function_hash(value)
    try:
        return str(hash_value(value))
    except ValueError:  # cannot be hashed: ignore it, as before
        return "?"


def _code_source_hash(target: Any, code: types.CodeType | None) -> str:
    if code is not None:
        with _lock:
            hit = _code_memo.get(id(code))
        if hit is not None and hit[0] is code:
            return hit[1]
    try:
        src = textwrap.dedent(inspect.getsource(target))
    except (OSError, TypeError):
        result = repr(target) if code is None else _code_bytes(code).hex()
    else:
        result = _source_hash(src)
    if code is not None:
        with _lock:
            if len(_code_memo) > 20_000:
                _code_memo.clear()
            _code_memo[id(code)] = (code, result)
    return result


def _source_hash(src: str) -> str:
    """The normalised AST of a ``def``/``class`` source without its decorators; the text
    itself (decorator lines dropped) when it does not parse alone (a lambda in a call)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        lines = src.splitlines()
        while lines and lines[0].lstrip().startswith("@"):
            lines.pop(0)
        return _digest("text", "\n".join(lines))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            node.decorator_list = []
    return _digest("ast", normalised(tree))


def _code_bytes(code: Any) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        parts.append(_code_bytes(const) if hasattr(const, "co_code") else repr(const).encode())
    return b"\0".join(parts)


def code_only_hash(fn: Any) -> str:
    """The hash of a function's code alone (normalised AST, else bytecode)."""
    target = inspect.unwrap(fn)
    return _code_source_hash(target, getattr(target, "__code__", None))


# -- modules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleSource:
    """A local module's file as hashed: its digest, its top-level definitions (name ->
    (hash, line)) and the modules it imports (absolute names)."""

    path: str
    digest: str
    defs: dict[str, tuple[str, int]]
    imports: tuple[str, ...]


def _library_roots() -> tuple[str, ...]:
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path) + os.sep)
    for base in {sys.base_prefix, sys.prefix, sys.exec_prefix}:
        roots.add(os.path.realpath(os.path.join(base, "lib")) + os.sep)  # lib/pythonX.Y, ...
    return tuple(sorted(roots))


_ROOTS: tuple[str, ...] | None = None


def is_local_module(module: types.ModuleType) -> bool:
    """True for a module whose file is the user's: not in site-packages, dist-packages or
    the standard library (a ``.py`` beside the notebook, an editable install). nbflow
    itself counts as a package."""
    global _ROOTS
    path = getattr(module, "__file__", None)
    name = getattr(module, "__name__", "") or ""
    if not path or name.split(".")[0] in ("nbflow", *sys.stdlib_module_names):
        return False
    local = _local_memo.get(path)
    if local is None:
        if _ROOTS is None:
            _ROOTS = _library_roots()
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        local = not ("site-packages" in parts or "dist-packages" in parts
                     or real.startswith(_ROOTS)) and real.endswith(".py")
        _local_memo[path] = local
    return local


def module_source(module: types.ModuleType) -> ModuleSource | None:
    """The hashed source of a local module's file (remembered by path, mtime and size);
    None when the file cannot be read or parsed."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    with _lock:
        hit = _file_memo.get(path)
    if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2]
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    digest, defs = _definitions(tree)
    source = ModuleSource(path, digest, defs, _imports(tree, package))
    with _lock:
        _file_memo[path] = (st.st_mtime_ns, st.st_size, source)
        _by_digest[source.digest] = source
    return source


#: id(module) -> (module, digest of the file as loaded, ids of the module's functions then)
_loaded: dict[int, tuple[types.ModuleType, str, frozenset[int]]] = {}


def loaded_source(module: types.ModuleType) -> ModuleSource | None:
    """:func:`module_source`, unless the file changed on disk and the module was not
    reloaded since (its functions are the same objects): then the source as it was
    when last seen, which is the code that runs."""
    source = module_source(module)
    if source is None:
        return None
    with _lock:
        seen = _loaded.get(id(module))
    if seen is not None and seen[0] is module:
        if seen[1] == source.digest:
            return source
        if seen[2] == _function_ids(module) and seen[1] in _by_digest:
            return _by_digest[seen[1]]  # edited, not reloaded: the old code still runs
    with _lock:
        _loaded[id(module)] = (module, source.digest, _function_ids(module))
    return source


def _function_ids(module: types.ModuleType) -> frozenset[int]:
    return frozenset(id(v) for v in vars(module).values() if isinstance(v, types.FunctionType))


def _definitions(tree: ast.Module) -> tuple[str, dict[str, tuple[str, int]]]:
    """The module's digest and its top-level definitions' (name -> (hash, line)), from
    one normalised dump of each top-level statement."""
    h = hashlib.blake2b(digest_size=16)
    out: dict[str, tuple[str, int]] = {}
    for node in tree.body:
        digest = _digest(normalised(node))
        h.update(digest.encode())
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            out[f"{kind} {node.name}"] = (digest, node.lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        out[f"global {name.id}"] = (digest, node.lineno)
    return h.hexdigest(), out


def _imports(tree: ast.Module, package: str) -> tuple[str, ...]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1] if node.level > 1 else parent
                base = ".".join([*parent, *([base] if base else [])])
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return tuple(dict.fromkeys(n for n in names if n))


def module_details(digest: str) -> dict[str, Any] | None:
    """A local module version's file and definitions (``{"path", "defs": {name: [hash,
    line]}}``, JSON-able), to keep beside a run's key parts so a later process can say
    which definition changed; None when this process never hashed that version."""
    source = _by_digest.get(digest)
    if source is None:
        return None
    return {"path": source.path, "defs": {k: list(v) for k, v in source.defs.items()}}


def describe_change(label: str, old: str | None, new: str | None,
                    known: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """What changed in a key component, in words: for a local module the definitions
    that changed, with their lines ("function clean in helpers.py at line 12"); for a
    package its versions ("package pandas 2.2.3 -> 3.0.1").

    ``known`` holds module versions this process never hashed, as
    :func:`module_details` gives them, by digest (the run database keeps them, so
    ``nbflow why`` can name the definition that changed since an earlier process).
    """
    if label.startswith("package "):
        return f"{label} {old or 'absent'} -> {new or 'absent'}"
    if label.startswith("module ") and old and new:
        before, after = _defs_of(old, known), _defs_of(new, known)
        if before is not None and after is not None:
            base = os.path.basename(after[0])
            changed = []
            for name in sorted(set(before[1]) | set(after[1])):
                b, a = before[1].get(name), after[1].get(name)
                if b is None or a is None or b[0] != a[0]:
                    line = (a or b)[1]  # type: ignore[index]
                    what = "added" if b is None else "removed" if a is None else ""
                    changed.append(f"{name} in {base} at line {line}" + (f" ({what})" if what else ""))
            if changed:
                return "; ".join(changed)
    return f"{label} changed"


def _defs_of(digest: str, known: Mapping[str, Mapping[str, Any]] | None,
             ) -> tuple[str, Mapping[str, Sequence[Any]]] | None:
    """``(path, definitions)`` of a module version: hashed here, or given in ``known``."""
    source = _by_digest.get(digest)
    if source is not None:
        return source.path, source.defs
    details = (known or {}).get(digest)
    if details is None:
        return None
    return str(details["path"]), details["defs"]


# -- packages -------------------------------------------------------------------------------


def distributions_of(module_name: str) -> dict[str, str]:
    """``{distribution: version}`` for the top-level package of ``module_name`` ({} for the
    standard library or a module no installed distribution provides)."""
    top = module_name.split(".")[0]
    if not top or top in sys.stdlib_module_names or top == "__main__":
        return {}
    path = tuple(sys.path)
    dists = _dists_memo.get(path)
    if dists is None:
        dists = {k: list(v) for k, v in importlib.metadata.packages_distributions().items()}
        _dists_memo[path] = dists
    out = {}
    for dist in dists.get(top, ()):
        version = _version_memo.get((dist, path))
        if version is None:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = "unknown"
            _version_memo[(dist, path)] = version
        out[dist] = version
    return out
